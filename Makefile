# The two commands (see README.md):
#   make train   install dependencies, build (Release), train the DCGAN on Fashion-MNIST
#   make test    install dependencies, build, run the whole test suite (also under ASan+UBSan,
#                and the GPU tests on the CUDA emulator)
# Knobs: JOBS (parallel build jobs), CUDA=AUTO|ON|OFF, CUDA_ARCHS (e.g. 90), TRAIN_ARGS.

JOBS ?= $(shell nproc)
CUDA ?= AUTO
CUDA_ARCHS ?=
BUILD ?= build
ASAN_BUILD ?= build-asan
EMU_BUILD ?= build-emu
CMAKE_FLAGS ?=
ARCH_FLAG := $(if $(CUDA_ARCHS),-DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHS),)
# 32x32 on the CPU finishes in minutes on 2 cores; a GPU trains 64x64 for several epochs.
TRAIN_ARGS ?=

.PHONY: all deps build test test-release test-asan test-emu train clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DGANTRY_CUDA=$(CUDA) $(ARCH_FLAG) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

test: test-release test-asan test-emu

test-release: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The CPU suite again under AddressSanitizer + UndefinedBehaviorSanitizer (no CUDA, no apps'
# long runs): memory errors and undefined behaviour fail the build. -O1 (ASan's advice): the
# instrumented build took about 12.5 minutes of CI's 2 cores at -O2 (most of it Eigen's GEMM
# instances) and takes 8.7 at -O1; the tests ran as fast (51 vs 52 s). -g1 (line tables only:
# reports still name file:line) instead of -g: kernels/cpu/gemm.cpp compiles in 26 s, not 42.
# The GPU tests are left out: without a CUDA backend they only skip (test-release and test-emu
# run them). With both, the build took 4:10 on 2 cores, not 6:00 (2026-12-03, Ninja).
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DGANTRY_CUDA=OFF \
	  -DGANTRY_BUILD_BENCHMARKS=OFF -DGANTRY_BUILD_CUDA_TESTS=OFF -DGANTRY_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(JOBS) -LE 'install|slow'

# The GPU tests (label cuda: kernel parity, GPU-vs-CPU training steps) on the CUDA emulator
# (tests/cuda_emu): the hand-written kernels run on the CPU, no GPU or nvcc needed. The target
# cuda_tests builds only what they run (not the CPU tests, which test-release ran).
test-emu: deps
	cmake -S . -B $(EMU_BUILD) -DCMAKE_BUILD_TYPE=Release -DGANTRY_CUDA_EMU=ON $(CMAKE_FLAGS)
	cmake --build $(EMU_BUILD) -j$(JOBS) --target cuda_tests
	cd $(EMU_BUILD) && ctest --output-on-failure -j$(JOBS) -L cuda

train: build
	@if [ -x $(BUILD)/apps/dcgan_train ]; then \
	  scripts/train-default.sh $(BUILD) $(TRAIN_ARGS); \
	else \
	  echo "dcgan_train is not built yet; running the test suite instead"; \
	  cd $(BUILD) && ctest --output-on-failure -j$(JOBS); \
	fi

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(EMU_BUILD)
