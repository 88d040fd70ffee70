"""Streaming statistics equal batch computations; their size does not grow with the data."""

from __future__ import annotations

import torch
from conftest import TEXTS

from prune_compensate import load_model
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.calibration.forward import DecoderTaps, TokenMask, find_residual_sites, run_forward
from prune_compensate.calibration.sources import CalibrationSample
from prune_compensate.calibration.statistics import CosineMoments, CrossMoments, PositionalMeans
from prune_compensate.model.locate import find_decoder
from prune_compensate.pruning.profile import ProfileConfig, profile_samples


def _padded_batches(seed: int = 0):
    """Three batches of (B, T, D) pairs with ragged lengths: padding rows are garbage."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lengths in ([5, 3], [7, 7, 2], [1]):
        b, t = len(lengths), max(lengths)
        a = torch.randn(b, t, 8, generator=g)
        e = torch.randn(b, t, 6, generator=g)
        mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
        a[~mask] = 1e6  # padding must never reach a statistic
        out.append((a, e, mask))
    return out


def test_cosine_moments_stream_equals_batch() -> None:
    stream = CosineMoments()
    rows_a, rows_b = [], []
    for a, _, mask in _padded_batches():
        b = a * 0.5 + torch.randn_like(a)
        token_mask = TokenMask()
        token_mask.set(mask)
        stream.update(token_mask.rows(a), token_mask.rows(b))
        rows_a.append(a[mask].double())
        rows_b.append(b[mask].double())
    cos = torch.nn.functional.cosine_similarity(torch.cat(rows_a), torch.cat(rows_b), dim=-1)
    assert stream.count == cos.numel() == 5 + 3 + 7 + 7 + 2 + 1
    assert abs(stream.mean - cos.mean().item()) < 1e-12
    assert abs(stream.std - cos.std(unbiased=False).item()) < 1e-12


def test_cross_moments_stream_equals_batch() -> None:
    stream = CrossMoments(8, 6)
    xs, es = [], []
    for a, e, mask in _padded_batches(1):
        token_mask = TokenMask()
        token_mask.set(mask)
        stream.update(token_mask.rows(a), token_mask.rows(e))
        xs.append(a[mask].double())
        es.append(e[mask].double())
    x, e = torch.cat(xs), torch.cat(es)
    torch.testing.assert_close(stream.gram, x.T @ x, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(stream.cross, x.T @ e, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(stream.sum_x, x.sum(0))
    assert stream.count == x.shape[0]


def test_positional_means_align_left_and_right_padding() -> None:
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    means = []
    for mask, data in ((right, x), (left, torch.stack([x[0].roll(1, 0), x[1]]))):
        token_mask = TokenMask()
        token_mask.set(mask)
        stat = PositionalMeans(2, 2, max_positions=8)
        rows = token_mask.rows(data)
        stat.update(rows, rows, token_mask.row_positions())
        means.append(stat.means()[0])
    torch.testing.assert_close(means[0], means[1])
    # position 0 averages the first real token of both samples
    torch.testing.assert_close(means[0][0], (x[0, 0] + x[1, 0]).double() / 2)


def test_layer_cosine_equals_hand_value(minilm_dir) -> None:
    loaded = load_model(minilm_dir)
    encoder = BatchEncoder(loaded.processor, 64)
    samples = [CalibrationSample(t, origin=str(i)) for i, t in enumerate(TEXTS)]
    result = profile_samples(loaded.model, encoder, samples, ProfileConfig(k=2, show_progress=False))
    # by hand: one padded batch, hooks of our own on layer 4's input and its attention sub-block output
    inputs = encoder(samples)
    block = loaded.model.encoder.layer[4]
    seen = {}
    h1 = block.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    h2 = block.attention.register_forward_hook(lambda m, a, o: seen.update(y=o[0]))
    with torch.no_grad():
        loaded.model(**inputs)
    h1.remove()
    h2.remove()
    mask = inputs["attention_mask"].bool()
    cos = torch.nn.functional.cosine_similarity(seen["x"][mask].double(), seen["y"][mask].double(), dim=-1)
    assert result.layers[4].n_tokens == int(mask.sum())
    assert abs(result.layers[4].cosine_mean - cos.mean().item()) < 1e-6
    assert abs(result.layers[4].cosine_std - cos.std(unbiased=False).item()) < 1e-6
    assert result.ranking[0] == max(range(6), key=lambda i: result.layers[i].cosine_mean)


def test_statistics_size_does_not_grow_with_samples(family_dirs) -> None:
    loaded = load_model(family_dirs["llama"])
    encoder = BatchEncoder(loaded.processor, 32)
    layout = find_decoder(loaded.model)
    sizes = []
    for n in (64, 512):
        samples = [CalibrationSample(TEXTS[i % 4] + f" sample {i}") for i in range(n)]
        token_mask = TokenMask()
        sites = find_residual_sites(loaded.model, layout, encoder(samples[:8]), token_mask)
        moments = [CosineMoments() for _ in range(layout.num_layers)]
        taps = DecoderTaps(layout, token_mask, sites=sites, on_residual=lambda i, a, b, m=moments: m[i].update(a, b))
        with taps:
            for start in range(0, n, 64):
                run_forward(loaded.model, encoder(samples[start : start + 64]), token_mask)
                assert not taps._before and not taps._after  # nothing held between batches
        assert moments[0].count > (n // 64) * 64
        sizes.append(sum(m.nbytes for m in moments))
    assert sizes[0] == sizes[1]
    # and the O(D²) moments for the next step have a fixed size too
    assert CrossMoments(64, 64).nbytes == (64 * 64 * 2 + 64 * 2) * 8


def test_token_mask_stretches_to_inserted_positions_only_without_padding() -> None:
    """A stack that runs on more positions than the batch has (a model inserting an image prefix
    inside its forward): with no padding every position is a real token; with padding nothing says
    which inserted position lines up with which mask column, so it is a one-line error."""
    import pytest

    from prune_compensate.errors import PCError

    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    token_mask = TokenMask()
    token_mask.set(torch.ones(2, 3, dtype=torch.long))
    assert torch.equal(token_mask.rows(hidden), hidden.reshape(10, 3))
    assert token_mask.row_positions().tolist() == [0, 1, 2, 3, 4] * 2
    token_mask.set(torch.tensor([[1, 1, 1], [1, 1, 0]]))
    with pytest.raises(PCError, match="one sample per batch"):
        token_mask.rows(hidden)
    token_mask.set(torch.ones(2, 6, dtype=torch.long))
    with pytest.raises(PCError, match="runs its stack on 5 positions"):
        token_mask.rows(hidden)


def test_several_residual_streams_per_token_are_refused_in_one_line() -> None:
    """Gemma 3n's AltUp blocks carry 4 residual streams per token, hidden states ``(4, B, T, D)``.
    Read as ``(B, T, D)``, the batch looked 4 samples long and the refusal blamed padding; the
    refusal now names the streams."""
    import pytest

    from prune_compensate.errors import PCError

    token_mask = TokenMask()
    token_mask.set(torch.ones(6, 21, dtype=torch.long))
    assert token_mask.rows(torch.zeros(6, 21, 8)).shape == (126, 8)
    with pytest.raises(PCError, match="4 residual streams per token") as err:
        token_mask.rows(torch.zeros(4, 6, 21, 8))
    assert len(str(err.value).splitlines()) == 1 and "not supported" in str(err.value)
