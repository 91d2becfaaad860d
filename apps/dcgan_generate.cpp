// dcgan_generate: images from a trained DCGAN generator, gantry's or PyTorch's (safetensors or
// torch.save .pth, PyTorch DCGAN example layout): one file per image (PNG, JPEG, WebP, BMP or
// TGA), a grid, or latent interpolations; optionally the best of M by the run's discriminator,
// and the seed's post-processing (bicubic upscale, median blur, sharpen).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <numeric>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "app_common.h"
#include "gantry/core/autograd.h"
#include "gantry/core/ops.h"
#include "gantry/core/random.h"
#include "gantry/core/safetensors.h"
#include "gantry/core/torch_checkpoint.h"
#include "gantry/core/version.h"
#include "gantry/data/grid.h"
#include "gantry/data/image.h"
#include "gantry/data/postprocess.h"
#include "gantry/data/transforms.h"
#include "gantry/models/dcgan.h"
#include "run_dir.h"

namespace fs = std::filesystem;
using namespace gantry;

namespace {

// Spherical interpolation between two latent vectors (the usual choice for Gaussian latents:
// it keeps the norm of the path near that of typical samples).
std::vector<float> slerp(const std::vector<float>& a, const std::vector<float>& b, float t) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += double(a[i]) * b[i];
    na += double(a[i]) * a[i];
    nb += double(b[i]) * b[i];
  }
  const double cos_omega = std::clamp(dot / std::sqrt(na * nb), -1.0, 1.0);
  const double omega = std::acos(cos_omega);
  std::vector<float> out(a.size());
  if (omega < 1e-6) {  // nearly parallel: plain linear interpolation
    for (size_t i = 0; i < a.size(); ++i) out[i] = (1 - t) * a[i] + t * b[i];
    return out;
  }
  const double sa = std::sin((1 - t) * omega) / std::sin(omega), sb = std::sin(t * omega) / std::sin(omega);
  for (size_t i = 0; i < a.size(); ++i) out[i] = static_cast<float>(sa * a[i] + sb * b[i]);
  return out;
}

Tensor load_latents(const std::string& path, int64_t nz) {
  SafetensorsContents c = load_tensor_file(path);
  const NamedTensor* z = find_tensor(c.tensors, "z");
  if (!z)
    throw std::invalid_argument("--latent " + path + ": no tensor named 'z' (found " +
                                std::to_string(c.tensors.size()) + " other tensors)");
  const Shape& s = z->tensor.shape();
  const bool ok = (s.size() == 2 && s[1] == nz) || (s.size() == 4 && s[1] == nz && s[2] == 1 && s[3] == 1);
  if (!ok)
    throw std::invalid_argument("--latent " + path + ": z has shape " + shape_str(s) + "; the generator needs [N, " +
                                std::to_string(nz) + "] or [N, " + std::to_string(nz) + ", 1, 1]");
  return z->tensor.reshape({s[0], nz, 1, 1});
}

// Whether a format (an --format name or a file extension) has a quality setting: JPEG and WebP.
bool has_quality(std::string f) {
  if (!f.empty() && f[0] == '.') f.erase(0, 1);
  std::transform(f.begin(), f.end(), f.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return f == "jpg" || f == "jpeg" || f == "webp";
}

int run(int argc, char** argv) {
  std::string checkpoint, key, latent, out_dir, grid, device_choice = "auto", bn = "eval", format = "png";
  int64_t num = 64, batch_size = 256, nrow = 8;
  int quality = 0;  // 0: the format's default (JPEG 95, WebP lossless)
  float truncation = 0;  // 0: plain N(0, 1) latents
  std::string save_latents;
  uint64_t seed = 0;
  int interpolate = 0;
  int64_t best_of = 0;
  std::string d_norm;  // --best-of's D norm when its file does not record it
  int upscale = 1, median = 0;
  bool sharpen = false, no_ema = false;
  CLI::App app{"dcgan_generate: images from a DCGAN generator (gantry " + std::string(version()) + ")"};
  app.option_defaults()->always_capture_default();
  app.add_option("--checkpoint", checkpoint, "a generator file: .safetensors (gantry's, or PyTorch's saved with safetensors) or .pth/.pt (torch.save(netG.state_dict()), as the PyTorch DCGAN example writes), or a dcgan_train run directory (its latest generator)")->required();
  app.add_option("--key", key, "the generator's name inside a checkpoint that holds several models (a torch training checkpoint {'netG': ..., 'netD': ...}: --key netG)");
  app.add_option("--num", num, "number of images (with --interpolate: number of interpolation rows)")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "seed of the latent vectors");
  app.add_option("--latent", latent, "a safetensors or torch.save file with a tensor z of shape [N, nz] or [N, nz, 1, 1] (torch.save({'z': z}, 'z.pt')); images come out in that order");
  app.add_option("--truncation", truncation, "the truncation trick (BigGAN): latent entries with |z| > T are drawn again, so every entry lies in [-T, T]; smaller T trades variety for fidelity; 0 = off");
  app.add_option("--save-latents", save_latents, "write the latent vectors of the images written, in their order, as z [N, nz, 1, 1] to this .safetensors file (--latent reads it back)");
  app.add_option("--out", out_dir, "write each image to its own file in this folder: 000000.png, 000001.png, ... (--format picks the format)");
  app.add_option("--format", format, "the format of --out's files: png, jpg, webp, bmp or tga (--grid takes its file's extension)")
      ->check(CLI::IsMember({"png", "jpg", "jpeg", "webp", "bmp", "tga"}));
  app.add_option("--quality", quality, "JPEG quality (default 95), or lossy WebP at this quality (default: lossless); 1-100")
      ->check(CLI::Range(1, 100));
  app.add_option("--grid", grid, "write all images as one grid, in the format its extension names (.png, .jpg, .webp, .bmp, .tga)");
  app.add_option("--nrow", nrow, "images per grid row")->check(CLI::PositiveNumber);
  app.add_option("--bn", bn, "batch norm statistics: eval (running statistics, as netG.eval()) or batch")->check(CLI::IsMember({"eval", "batch"}));
  app.add_option("--interpolate", interpolate, "K: a grid of K-step spherical interpolations between random latent pairs (one row per pair)")->check(CLI::Range(2, 1000));
  app.add_option("--batch-size", batch_size, "images per forward pass (eval mode only; --bn batch uses one pass)")->check(CLI::PositiveNumber);
  app.add_option("--device", device_choice, "auto, cpu, cuda or cuda:N");
  app.add_option("--best-of", best_of, "generate M images and keep the --num that the run's discriminator scores highest (best first); needs discriminator.safetensors next to the generator")->check(CLI::PositiveNumber);
  app.add_option("--d-norm", d_norm, "--best-of: the discriminator's norm (instance or layer) when its file does not record it (dcgan_train's files do)")
      ->check(CLI::IsMember({"batch", "instance", "layer", "none"}));
  app.add_option("--upscale", upscale, "post-process: enlarge by this factor with bicubic interpolation")->check(CLI::Range(1, 16));
  app.add_option("--median", median, "post-process: median blur with a KxK window (K odd, e.g. 3), after --upscale")->check(CLI::Range(0, 31));
  app.add_flag("--sharpen", sharpen, "post-process: 3x3 sharpen filter (PIL's SHARPEN), last");
  app.add_flag("--no-ema", no_ema, "use the raw generator of a run directory even when it has an EMA generator");
  try {
    app.parse(argc, argv);
    if (out_dir.empty() && grid.empty()) throw CLI::ValidationError("give --out DIR and/or --grid FILE.png: nowhere to write images");
    if (!latent.empty() && interpolate) throw CLI::ValidationError("--latent and --interpolate cannot be combined");
    if (!latent.empty() && app.count("--num")) throw CLI::ValidationError("--num comes from --latent's z; give one of them");
    if (const std::string e = apps::truncation_error(truncation); !e.empty()) throw CLI::ValidationError(e);
    if (!latent.empty() && truncation > 0) throw CLI::ValidationError("--truncation draws the latents; --latent gives them: give one of them");
    if (!save_latents.empty() && fs::path(save_latents).extension() != ".safetensors")
      throw CLI::ValidationError("--save-latents " + save_latents + ": the file name must end in .safetensors");
    if (best_of && (!latent.empty() || interpolate)) throw CLI::ValidationError("--best-of cannot be combined with --latent or --interpolate");
    if (best_of && best_of < num) throw CLI::ValidationError("--best-of " + std::to_string(best_of) + " must be at least --num " + std::to_string(num));
    if (median != 0 && median % 2 == 0) throw CLI::ValidationError("--median " + std::to_string(median) + ": the window must be odd (3, 5, ...)");
    if (!grid.empty() && !data::image_extension_writable(grid))
      throw CLI::ValidationError("--grid " + grid + ": cannot write that kind of file; end the name with one of " +
                                 data::writable_image_extensions());
    if (!out_dir.empty() && !data::image_extension_writable("x." + format))
      throw CLI::ValidationError("--format " + format + ": this gantry was built without libwebp; use png, jpg, bmp or tga");
    if (app.count("--format") && out_dir.empty()) throw CLI::ValidationError("--format names --out's files; give --out DIR (--grid takes its file's extension)");
    if (quality && !has_quality(out_dir.empty() ? "" : format) && !has_quality(grid.empty() ? "" : fs::path(grid).extension().string()))
      throw CLI::ValidationError("--quality is for JPEG and WebP files; neither --out's --format " + format +
                                 (grid.empty() ? "" : " nor --grid " + grid) + " is one");
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const int jpeg_quality = quality ? quality : 95;
  const Device device = apps::choose_device(device_choice);
  const std::string gen_file = apps::resolve_generator_file(checkpoint, /*prefer_ema=*/!no_ema);
  std::string disc_file;
  if (best_of) {
    disc_file = apps::sibling_discriminator_file(gen_file);
    if (disc_file.empty())
      throw std::runtime_error("--best-of needs the run's discriminator, but there is no discriminator.safetensors next to " +
                               gen_file + "; give a dcgan_train run directory or checkpoint folder (or drop --best-of)");
  }
  auto g = generator_from_state_dict(apps::load_model_weights(gen_file, key));
  g->to(device);
  g->train(bn == "batch");
  apps::note_truncation_with_batch_stats(truncation, bn);
  std::cerr << "generator " << gen_file << ": nz " << g->nz << ", ngf " << g->ngf << ", " << g->image_size << "x"
            << g->image_size << "x" << g->nc << "\n";

  Tensor z;
  if (!latent.empty()) {
    z = load_latents(latent, g->nz);
  } else if (interpolate) {
    Generator rng(seed);
    Tensor ends = sample_latents({2 * num, g->nz}, rng, truncation);
    std::vector<float> e = ends.to_vector(), all;
    for (int64_t r = 0; r < num; ++r) {
      std::vector<float> a(e.begin() + 2 * r * g->nz, e.begin() + (2 * r + 1) * g->nz);
      std::vector<float> b(e.begin() + (2 * r + 1) * g->nz, e.begin() + (2 * r + 2) * g->nz);
      for (int k = 0; k < interpolate; ++k) {
        std::vector<float> v = slerp(a, b, static_cast<float>(k) / (interpolate - 1));
        all.insert(all.end(), v.begin(), v.end());
      }
    }
    z = Tensor::from_vector(all, {num * interpolate, g->nz, 1, 1});
    nrow = interpolate;
  } else {
    Generator rng(seed);
    z = sample_latents({best_of ? best_of : num, g->nz, 1, 1}, rng, truncation);
  }

  NoGradGuard no_grad;
  const int64_t n = z.shape()[0];
  const int64_t chunk = bn == "batch" ? n : batch_size;
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < n; i += chunk)
    parts.push_back(g->forward(z.narrow0(i, std::min(chunk, n - i)).to(device)).cpu());
  Tensor images = parts.size() == 1 ? parts[0] : cat(parts, 0);
  int64_t n_out = n;

  if (best_of) {  // score all M with D (eval mode: running statistics) and keep the top --num
    // A run's discriminator.safetensors names its norm (instance and layer have the same keys);
    // --d-norm stands in for a file that does not.
    const SafetensorsContents dc = load_safetensors(disc_file);
    const auto recorded = dc.metadata.find("d_norm");
    const std::string norm_name = recorded != dc.metadata.end() ? recorded->second : d_norm;
    DiscriminatorNorm norm;
    try {
      norm = norm_name.empty() ? DiscriminatorNorm::Batch : discriminator_norm_from_name(norm_name);  // Batch: read the keys
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(disc_file + ": its d_norm metadata: " + e.what());
    }
    if (recorded != dc.metadata.end() && !d_norm.empty() && d_norm != recorded->second)
      throw std::invalid_argument("--d-norm " + d_norm + ": " + disc_file + " records --d-norm " + recorded->second +
                                  " (its d_norm metadata); leave the flag out");
    std::shared_ptr<DCGANDiscriminator> d;
    try {
      d = discriminator_from_state_dict(dc.tensors, norm);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(disc_file + ": " + e.what());
    }
    std::cout << "--best-of: scoring with " << disc_file << " (" << discriminator_norm_name(d->norm) << " norm)\n";
    d->to(device);
    d->eval();
    std::vector<float> scores;
    for (int64_t i = 0; i < n; i += batch_size) {
      std::vector<float> s = d->forward(images.narrow0(i, std::min(batch_size, n - i)).to(device)).to_vector();
      scores.insert(scores.end(), s.begin(), s.end());
    }
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
    std::vector<Tensor> keep;
    std::vector<Tensor> keep_z;
    for (int64_t i = 0; i < num; ++i) {
      keep.push_back(images.narrow0(order[i], 1));
      keep_z.push_back(z.narrow0(order[i], 1));
    }
    images = cat(keep, 0);
    z = cat(keep_z, 0);
    n_out = num;
    std::cerr << "best " << num << " of " << n << " by " << disc_file << ": D scores " << scores[order[0]] << " .. "
              << scores[order[num - 1]] << " (all: " << scores[order[n - 1]] << " .. " << scores[order[0]] << ")\n";
  }

  // Post-processing on 8-bit images, in the seed's order: upscale, median, sharpen.
  const bool post = upscale > 1 || median > 1 || sharpen;
  std::vector<data::Image> processed;
  if (post) {
    for (int64_t i = 0; i < n_out; ++i) {
      data::Image im = data::tensor_to_image(images.narrow0(i, 1));
      if (upscale > 1) im = data::upscale_bicubic(im, upscale);
      if (median > 1) im = data::median_blur(im, median);
      if (sharpen) im = data::sharpen(im);
      processed.push_back(std::move(im));
    }
    const data::Image& f = processed.front();
    Tensor t = Tensor::empty({n_out, f.channels, f.height, f.width});
    for (int64_t i = 0; i < n_out; ++i)
      data::to_chw_float(processed[i], false, t.data() + i * f.channels * f.height * f.width);
    images = t;
  }

  if (!out_dir.empty()) {
    fs::create_directories(out_dir);
    for (int64_t i = 0; i < n_out; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "%06lld.%s", static_cast<long long>(i), format.c_str());
      data::write_image((fs::path(out_dir) / name).string(),
                        post ? processed[i] : data::tensor_to_image(images.narrow0(i, 1)), jpeg_quality, quality);
    }
    std::cerr << "wrote " << n_out << " images to " << out_dir << "\n";
  }
  if (!save_latents.empty()) {
    if (fs::path(save_latents).has_parent_path()) fs::create_directories(fs::path(save_latents).parent_path());
    save_safetensors(save_latents, {{"z", z.reshape({n_out, g->nz, 1, 1})}});
    std::cerr << "wrote the " << n_out << " latent vectors to " << save_latents << "\n";
  }
  if (!grid.empty()) {
    if (fs::path(grid).has_parent_path()) fs::create_directories(fs::path(grid).parent_path());
    data::write_image(grid, data::make_grid(images, static_cast<int>(nrow)), jpeg_quality, quality);
    std::cerr << "wrote grid " << grid << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return apps::run_app("dcgan_generate", run, argc, argv); }
