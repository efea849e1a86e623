"""SD-VAE (AutoencoderKL): agreement with diffusers' own AutoencoderKL on small random configs
(the SD layout, and the SD3 / FLUX layout: 16 channels, no quant convs, a shift factor), the
converter, config.json and the weight files, the real architecture at 256x256, and the errors
at the public boundary.

The references (tests/fixtures/vae_diffusers.{safetensors,npz}, vae_sd3_diffusers/ and
vae_sd3_diffusers.npz, torch_vae.bin, torch_inception.pth) were made by
tests/fixtures/make_vae_diffusers.py; torch and diffusers are not needed to run these tests.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from flowjax import weight_files
from flowjax.models import vae as V
from flowjax.workflows.convert import convert_vae

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
WEIGHTS = os.path.join(FIXTURES, "vae_diffusers.safetensors")
OUTPUTS = os.path.join(FIXTURES, "vae_diffusers.npz")
SD3_DIR = os.path.join(FIXTURES, "vae_sd3_diffusers")
SD3_WEIGHTS = os.path.join(SD3_DIR, "diffusion_pytorch_model.safetensors")
SMALL = dataclasses.replace(V.SD_VAE_CONFIG, block_out_channels=(8, 16, 16), norm_num_groups=4)


def _diffusers_json(path, config, **changes):
    """A diffusers-style config.json of ``config`` (what ``save_pretrained`` writes)."""
    n = len(config.block_out_channels)
    cfg = {
        "_class_name": "AutoencoderKL",
        **dataclasses.asdict(config),
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "act_fn": "silu",
        "latents_mean": None,
        **changes,
    }
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.fixture(scope="module")
def state_dict():
    return weight_files.read_safetensors(WEIGHTS)


@pytest.fixture(scope="module")
def reference():
    with np.load(OUTPUTS) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def model(state_dict):
    weights, config = V.convert_diffusers_state_dict(state_dict, SMALL)
    return V.AutoencoderKL.from_weights(weights, config)


def _close(got, want, tol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= tol * max(1.0, np.max(np.abs(want)))


def test_encode_and_decode_match_diffusers(model, reference):
    assert model.config == SMALL and model.downsample_factor == 4
    mean, std = model.encode_moments(reference["x"])
    _close(mean, reference["mean"])
    _close(2 * np.log(np.asarray(std, np.float64)), reference["logvar"])
    # decode() takes model-space latents y = scaling_factor * z.
    _close(model.decode(model.scale(reference["z"])), reference["decoded"])
    # encode(): the scaled posterior mean; with a key, mean + std * eps.
    _close(model.encode(reference["x"]), V.SD_VAE_CONFIG.scaling_factor * reference["mean"])
    key = jax.random.PRNGKey(3)
    eps = jax.random.normal(key, mean.shape)
    _close(model.encode(reference["x"], key), model.scale(mean + std * eps))


def test_old_attention_names_and_conv_attention_weights_convert_alike(state_dict):
    new, _ = V.convert_diffusers_state_dict(state_dict, SMALL)
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for k, v in state_dict.items():
        for a, b in renames.items():
            k = k.replace(f".attentions.0.{a}.", f".attentions.0.{b}.")
        if ".attentions.0." in k and k.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # the 1x1 convs of the original ldm attention block
        old[k] = v
    converted, _ = V.convert_diffusers_state_dict(old, SMALL)
    assert set(converted) == set(new)
    for k in new:
        np.testing.assert_array_equal(converted[k], new[k])
    # HWIO: kernel[i, j, c_in, c_out] = torch weight[c_out, c_in, i, j]; Dense [in, out].
    w = state_dict["encoder.down_blocks.1.resnets.0.conv1.weight"]
    assert new["encoder/down_blocks_1_resnets_0/conv1/kernel"][2, 0, 5, 9] == w[9, 5, 2, 0]
    q = state_dict["decoder.mid_block.attentions.0.to_q.weight"]
    assert new["decoder/mid_block/attentions_0/to_q/kernel"][3, 7] == q[7, 3]


def test_npz_round_trip_and_command_line(state_dict, reference, tmp_path, model):
    cfg_json = _diffusers_json(tmp_path / "config.json", SMALL, scaling_factor=0.5)
    out = tmp_path / "vae.npz"
    assert convert_vae(str(WEIGHTS), str(out), config=str(cfg_json)).startswith("wrote")
    loaded = V.AutoencoderKL.from_file(out)
    assert loaded.config == dataclasses.replace(SMALL, scaling_factor=0.5)
    _close(loaded.decode(loaded.scale(reference["z"])), reference["decoded"])
    # A .safetensors with its config.json beside it loads directly, no conversion needed.
    (tmp_path / "st").mkdir()
    os.symlink(os.path.abspath(WEIGHTS), tmp_path / "st" / "model.safetensors")
    os.symlink(cfg_json, tmp_path / "st" / "config.json")
    direct = V.AutoencoderKL.from_file(tmp_path / "st" / "model.safetensors", scaling_factor=1.0)
    assert direct.config.scaling_factor == 1.0
    _close(direct.encode(reference["x"]), reference["mean"])


def test_wrong_network_is_refused_naming_the_expected_keys(tmp_path):
    from flowjax.evaluation import lpips

    not_a_vae = {k.replace("/", "."): v for k, v in lpips.random_weights(0, (4,) * 5).items()}
    with pytest.raises(ValueError, match=r"not AutoencoderKL.*encoder/conv_in/kernel"):
        V.convert_diffusers_state_dict(not_a_vae, SMALL)
    path = tmp_path / "lpips.npz"
    np.savez(path, **lpips.random_weights(0, (4,) * 5))
    with pytest.raises(
        ValueError, match=r"missing keys .*encoder/conv_in/kernel.*flowjax convert-vae"
    ):
        V.AutoencoderKL.from_file(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable VAE"):
        V.AutoencoderKL.from_file(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="flowjax convert-vae"):
        V.AutoencoderKL.from_file(tmp_path / "missing.npz")


def test_bad_images_are_refused_before_any_work(model):
    with pytest.raises(ValueError, match="cannot be downsampled by this VAE's factor 4"):
        model.encode_moments(np.zeros((1, 18, 16, 3), np.float32))
    with pytest.raises(ValueError, match="3-channel"):
        model.encode_moments(np.zeros((1, 16, 16, 1), np.float32))
    with pytest.raises(ValueError, match="floats in"):
        model.encode_moments(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"latents \[B, h, w, 4\]"):
        model.decode(np.zeros((1, 4, 4, 3), np.float32))


@pytest.mark.slow
def test_real_architecture_round_trip_at_256_is_finite_and_shape_correct():
    config = V.SD_VAE_CONFIG
    weights = V.random_weights(config, seed=0)
    assert sum(w.size for w in weights.values()) == 83_653_863  # SD-VAE's parameter count
    vae = V.AutoencoderKL.from_weights(weights, config)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    y = vae.encode(x, jax.random.PRNGKey(0))
    assert y.shape == (1, 32, 32, 4) and np.all(np.isfinite(y))
    x_hat = vae.decode(y)
    assert x_hat.shape == (1, 256, 256, 3) and np.all(np.isfinite(x_hat))


@pytest.fixture(scope="module")
def sd3_reference():
    with np.load(os.path.join(FIXTURES, "vae_sd3_diffusers.npz")) as data:
        return {k: data[k] for k in data.files}


def test_sd3_style_vae_matches_diffusers_and_converts(sd3_reference, tmp_path):
    # The folder save_pretrained wrote, read directly: the config comes from its config.json.
    vae = V.AutoencoderKL.from_file(SD3_WEIGHTS)
    cfg = vae.config
    assert (cfg.latent_channels, cfg.use_quant_conv, cfg.use_post_quant_conv) == (16, False, False)
    assert (cfg.scaling_factor, cfg.shift_factor) == (1.5305, 0.0609)
    assert cfg.block_out_channels == (8, 8) and cfg.layers_per_block == 1
    assert "quant_conv" not in vae.params and "post_quant_conv" not in vae.params
    ref = sd3_reference
    mean, std = vae.encode_moments(ref["x"])
    _close(mean, ref["mean"])
    _close(2 * np.log(np.asarray(std, np.float64)), ref["logvar"])
    # Model space: y = (z - shift) * scale on encode, z = y / scale + shift on decode.
    _close(vae.encode(ref["x"]), (ref["mean"] - 0.0609) * 1.5305)
    _close(vae.decode((ref["z"] - 0.0609) * 1.5305), ref["decoded"])
    # The converter without --config reads the config.json beside the weights.
    out = tmp_path / "sd3.npz"
    convert_vae(str(SD3_WEIGHTS), str(out))
    converted = V.AutoencoderKL.from_file(out)
    assert converted.config == cfg and converted.fingerprint() == vae.fingerprint()


def test_config_json_beside_the_weights_is_read_or_its_absence_refused(tmp_path, capsys):
    # Weights with their config.json beside them: its groups and factors are used.
    folder = tmp_path / "sd"
    folder.mkdir()
    os.symlink(os.path.abspath(WEIGHTS), folder / "diffusion_pytorch_model.safetensors")
    weights = folder / "diffusion_pytorch_model.safetensors"
    _diffusers_json(folder / "config.json", SMALL, scaling_factor=0.25, shift_factor=0.125)
    out = tmp_path / "vae.npz"
    convert_vae(str(weights), str(out))
    want = dataclasses.replace(SMALL, scaling_factor=0.25, shift_factor=0.125)
    assert V.AutoencoderKL.from_file(out).config == want
    assert V.AutoencoderKL.from_file(weights).config == want
    # A config.json that does not describe these weights is refused, naming the fields.
    _diffusers_json(folder / "config.json", SMALL, latent_channels=16, use_quant_conv=False)
    with pytest.raises(ValueError, match=r"latent_channels=16 in .*config.json, 4 in the weights"):
        V.AutoencoderKL.from_file(weights)
    # ... and so is another model's config, or a variant this network does not implement.
    _diffusers_json(folder / "config.json", SMALL, _class_name="UNet2DConditionModel")
    with pytest.raises(ValueError, match="not an AutoencoderKL's config"):
        V.AutoencoderKL.from_file(weights)
    _diffusers_json(folder / "config.json", SMALL, latents_mean=[0.0] * 4)
    with pytest.raises(ValueError, match="latents_mean"):
        V.AutoencoderKL.from_file(weights)
    # No config.json and no --config: refused, not read with the SD-VAE's settings.
    os.remove(folder / "config.json")
    with pytest.raises(ValueError, match=r"no config.json beside.*--config=config.json"):
        convert_vae(str(weights), str(tmp_path / "never.npz"))
    assert not (tmp_path / "never.npz").exists()
    with pytest.raises(ValueError, match="no config.json beside"):
        V.AutoencoderKL.from_file(weights)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("torch_vae.bin", "a PyTorch checkpoint .* of a diffusers AutoencoderKL"),
        ("torch_inception.pth", "a PyTorch checkpoint .* of an InceptionV3"),
    ],
)
def test_torch_checkpoints_given_as_vae_weights_are_named(name, kind):
    with pytest.raises(ValueError, match=f"is not a readable VAE .npz weight file: it is {kind}"):
        V.AutoencoderKL.from_file(os.path.join(FIXTURES, name))


def test_fingerprint_follows_the_weights_not_the_file(model, state_dict, tmp_path):
    npz = V.save_weights(tmp_path / "vae.npz", *V.convert_diffusers_state_dict(state_dict, SMALL))
    assert V.AutoencoderKL.from_file(npz).fingerprint() == model.fingerprint()
    params = jax.tree.map(np.array, model.params)
    params["decoder"]["conv_out"]["bias"][0] += 1e-3
    assert V.AutoencoderKL(params, model.config).fingerprint() != model.fingerprint()
