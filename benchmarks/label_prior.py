"""What the untuned model already knows about the English example's issue labels: each issue wording of
examples/support_en (train and eval pools) is put to the base model as a question, and each label's
description is scored by its mean token log-probability as the answer, minus the same score after a
content-free message (contextual calibration); the best label is the model's zero-shot answer.

    .venv/bin/python benchmarks/label_prior.py [--model PATH_OR_ID]

Prints each wording with the label chosen and the share right per split. A wording the base model
already maps to its label is one fine-tuning could keep; one it does not is knowledge the 135M model
has to get from the training rows. Nothing is asserted.
"""

from __future__ import annotations

import argparse

import torch

from wordings import generator  # benchmarks/wordings.py, beside this file

DESCRIPTIONS = {"damaged": "damaged in shipping", "late": "delivered late", "wrong_item": "the wrong item",
                "missing": "missing from the package", "billing": "a billing problem", "defective": "defective"}
PRODUCT = "blender"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerotune.models.embedded import embedded_dir

    where = args.model or str(embedded_dir())
    tok = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where).eval()
    gen = generator("en")

    def score(text: str, answer: str) -> float:
        messages = [{"role": "user", "content": f'A customer wrote: "{text}"\nWhat is the problem? Answer in a few words.'}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + "The problem is: "
        n = tok(prompt, return_tensors="pt").input_ids.shape[1]
        full = tok(prompt + answer, return_tensors="pt").input_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0, :-1].float(), -1)
        return logp[n - 1:].gather(1, full[0, n:, None]).mean().item()

    content_free = {label: score(f"the {PRODUCT}", d) for label, d in DESCRIPTIONS.items()}
    for split in ("TRAIN", "EVAL"):
        right = total = 0
        for label, wordings in getattr(gen, split)["issue"].items():
            for wording in wordings:
                text = wording.format(p=PRODUCT)
                scores = {k: score(text, d) - content_free[k] for k, d in DESCRIPTIONS.items()}
                chosen = max(scores, key=scores.get)
                right += chosen == label
                total += 1
                print(f"{split.lower():5} {label:10} -> {chosen:10} {'ok ' if chosen == label else '   '} {text}")
        print(f"{split.lower()}: {right}/{total} issue wordings answered right zero-shot (calibrated)\n")


if __name__ == "__main__":
    main()
