"""Helpers for the serve tests (no tests here): a tiny model that always gives one known answer, and a
uvicorn server on a free loopback port in a background thread."""

from __future__ import annotations

import functools
import socket
import tempfile
import threading
import time
from pathlib import Path

import torch

# Distinct tokens in a row, so a model that predicts the next token from the current one alone can say it.
REPLY = "Sure, call:12-345 6789!"
REDACTED = "Sure, call:[PHONE]!"
REPLY_TOKENS = 16


def build_scripted_model(out: Path, reply: str = REPLY) -> Path:
    """Save a tiny random Llama (vocab 49152, hidden 64, 2 layers) rigged to answer `reply` to anything.

    Attention and MLP outputs are zeroed, so each position's hidden state is its own token's embedding;
    the embeddings of the answer's tokens are one-hot and the LM head maps each to the next token. The
    prompt's last token (the newline after the assistant header) starts the chain, end-of-turn ends it.
    Real generate_batch / stream code paths run, yet the answer (with a phone number split across
    streamed pieces) is known exactly.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from zerotune.models.embedded import embedded_dir

    tok = AutoTokenizer.from_pretrained(str(embedded_dir()))
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    newline = tok("\n", add_special_tokens=False)["input_ids"][-1]
    chain = [newline, *tok(reply, add_special_tokens=False)["input_ids"], tok.convert_tokens_to_ids("<|im_end|>")]
    assert len(set(chain[:-1])) == len(chain) - 1 <= 64, "the reply's tokens must be distinct"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (now, nxt) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[now] = torch.nn.functional.one_hot(torch.tensor(i), 64).float()
            model.lm_head.weight[nxt, i] = 10.0
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@functools.cache
def scripted_loaded():
    """The scripted model, built once per test session and loaded through load_target."""
    from zerotune.models.inference import load_target

    folder = Path(tempfile.mkdtemp(prefix="zerotune-serve-test-")) / "model"
    return load_target(str(build_scripted_model(folder)))


class ServerThread:
    """Run an ASGI app with uvicorn on 127.0.0.1:<free port> for the length of a with-block."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()
