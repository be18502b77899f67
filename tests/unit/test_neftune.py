"""NEFTune: noise on the input embeddings while training, bounded per packed example."""

import torch

from tiny import ROWS, tiny_model
from zerotune.data.packing import pack
from zerotune.data.tokenize import tokenize_rows
from zerotune.models.attention import segments, use_packed_attention
from zerotune.models.templates import resolve_format
from zerotune.train import loop, neftune


def _embedded(model, ids, segs=None):
    """What the decoder receives from the embedding layer (hooks included)."""
    emb = model.get_input_embeddings()
    if segs is None:
        return emb(ids)
    with neftune.packed(segs):
        return emb(ids)


def test_noise_is_bounded_by_each_packed_example_length():
    model, _ = tiny_model("llama")
    width = model.config.hidden_size
    ids = torch.arange(3, 13).unsqueeze(0)
    clean = model.get_input_embeddings()(ids).detach()
    handle = neftune.attach(model, 5.0)
    model.train()
    torch.manual_seed(0)
    noisy = _embedded(model, ids, ((0, 4), (4, 10))).detach()
    dev = (noisy - clean).abs().amax(-1)[0]  # largest deviation of each token
    short, long = neftune.magnitude(5.0, 4, width), neftune.magnitude(5.0, 6, width)
    assert torch.all(dev[:4] <= short + 1e-6) and torch.all(dev[4:] <= long + 1e-6)
    # uniform in [-bound, bound] over `width` dims: the largest is close to the bound, not shrunk by
    # the row's total length (10 tokens would give a bound below the short example's)
    assert dev[:4].min() > neftune.magnitude(5.0, 10, width)
    assert dev[4:].min() > 0.5 * long
    # without segment information the whole row is one example
    whole = (_embedded(model, ids).detach() - clean).abs().amax(-1)[0]
    assert torch.all(whole <= neftune.magnitude(5.0, 10, width) + 1e-6)
    handle.remove()
    assert torch.equal(model.get_input_embeddings()(ids), clean)


def test_no_noise_in_eval_mode_or_at_alpha_zero():
    model, _ = tiny_model("llama")
    ids = torch.arange(3, 9).unsqueeze(0)
    clean = model.get_input_embeddings()(ids).detach()
    assert neftune.attach(model, 0.0) is None
    model.train()
    assert torch.equal(model.get_input_embeddings()(ids), clean)
    neftune.attach(model, 5.0)
    model.eval()
    assert torch.equal(model.get_input_embeddings()(ids), clean)


def test_row_loss_is_noised_only_while_training():
    model, tokenizer = tiny_model("llama")
    use_packed_attention(model)
    examples = tokenize_rows(ROWS, tokenizer, resolve_format(tokenizer, "auto"), 512).examples
    row = pack(examples)
    assert len(segments(row.position_ids)) > 1
    cpu = torch.device("cpu")
    model.eval()
    with torch.no_grad():
        base = float(loop.row_loss(model, row, cpu))
        neftune.attach(model, 15.0)
        assert float(loop.row_loss(model, row, cpu)) == base
        model.train()
        torch.manual_seed(1)
        first = float(loop.row_loss(model, row, cpu))
        torch.manual_seed(2)
        second = float(loop.row_loss(model, row, cpu))
    assert first != base and second != first
