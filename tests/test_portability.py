"""The portability contract on the bundled models (the CI subset of scripts/check_portability.py).

A decoder whose entropy parameters carry relative noise 1e-4 (h_s outputs, mu, sigma before
rounding, the LRP outputs, every slice; ``coding.perturbation``) decodes every bundled model's
file of a sample image to the encoder's symbols, with the image equal up to float noise. The
bundled model files carry their z coding tables (computed once at export).
"""

from __future__ import annotations

import numpy as np
import pytest

from mracnn_jax import codec, images, model_file, zoo
from mracnn_jax.coding import perturbation

SAMPLE = images.SAMPLES_DIR / "kodim23.png"
BUNDLED = [e.path for e in zoo.for_channels(3)]


@pytest.mark.slow
@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_bundled_files_survive_a_perturbed_decoder(path):
    model = codec.LoadedModel.load(path)
    rgb, _ = images.read_image(SAMPLE)
    enc = codec.compress_with_info(rgb, model)
    dec = codec.decompress_with_info(enc.data, perturbation.perturbed(model, 1e-4, seed=1))
    np.testing.assert_array_equal(dec.z_symbols, enc.z_symbols)
    np.testing.assert_array_equal(dec.y_symbols, enc.y_symbols)
    diff = np.abs(dec.image.astype(int) - enc.reconstruction.astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.01, (diff.max(), diff.mean())
    # The agreement blocks are the whole price of it: under 1.5 % of the file (q1, the smallest
    # files, pays most: about 1 %).
    assert 0 < enc.bits["agreement"] < 0.015 * enc.bits["file"]


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_bundled_models_store_their_coding_tables(path):
    stored = model_file.load_coding_tables(path)
    assert stored is not None, f"{path.name} has no stored z coding tables"
    model = codec.LoadedModel.load(path)
    assert model.coding_tables() is stored or all(
        np.array_equal(np.asarray(model.coding_tables()[k]), np.asarray(v))
        for k, v in stored.items()
    )
