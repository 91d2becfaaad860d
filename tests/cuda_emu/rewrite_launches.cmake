# Rewrites the kernel launches of a .cu file into C++ for the CUDA emulator:
#   name<<<grid, block, smem, stream>>>(args)
#   -> ::gemu::Launch([](auto... a) { name(a...); }, "name", grid, block, smem, stream)(args)
# A #line directive keeps compiler messages pointing at the original file and line.
# Usage: cmake -DIN=file.cu -DOUT=file.cpp -P rewrite_launches.cmake
file(READ "${IN}" text)
string(REGEX REPLACE "([A-Za-z_][A-Za-z0-9_]*(<[^<>;]*>)?)<<<"
       "::gemu::Launch([](auto... gemu_a) { \\1(gemu_a...); }, \"\\1\", " text "${text}")
string(REPLACE ">>>" ")" text "${text}")
file(WRITE "${OUT}.tmp" "#line 1 \"${IN}\"\n${text}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
