"""Greedy generation under a grammar, with the text the grammar forces evaluated as prompt.

Under a JSON-schema grammar most of an answer has no choice in it: ``{"playbook":"``, the rest
of a name once its first token picked it, ``","params":{},"evidence":[`` ... Sampled token by
token, each of those is a full decode step (~40 ms on a busy core); appended to the sequence
and evaluated in one batch with the next free position, they cost ~10 ms each (issue 18).

llama.cpp's grammar sampler says what is forced: the printable ASCII characters (as one-byte
tokens) it still allows at this point; while exactly one is allowed and the answer cannot end
there, that character is forced. The grammar accepts forced text character by character and
sampled tokens as they come, so every byte of the answer is checked by the same grammar as
before; the model is given the forced text as its tokenizer spells it (the spelling the
sampler would have chosen cannot change what the text says). A free position where the
grammar allows one ASCII character but also characters outside ASCII (no schema the brain
builds has one) is treated as forced: the answer stays valid, only narrower.
"""

from __future__ import annotations

import ctypes
import math
import time
from dataclasses import dataclass
from typing import Any

FORCED_MAX = 512  # characters forced in a row: no grammar the brain builds comes near


@dataclass
class Generated:
    text: str
    sampled: int  # tokens the model chose (decoded one at a time unless forced text follows)
    forced: int  # tokens appended as forced text (evaluated in batches)
    reused: int  # prompt tokens already in the KV cache
    evaluated: int  # the answer's tokens evaluated (all but its last sampled or forced ones)
    first_s: float  # monotonic time of the first sampled token (or the end)


class Decoder:
    """One per loaded model: the probe tokens and a reusable candidate array."""

    def __init__(self, llm: Any):
        import llama_cpp

        self.llm = llm
        self.vocab = llm._model.vocab
        chars: dict[int, str] = {}
        for c in map(chr, range(0x20, 0x7F)):
            t = llm.tokenize(c.encode(), add_bos=False, special=False)
            if len(t) == 1:
                chars[t[0]] = c
        self.chars = chars
        self.eos = llm.token_eos()
        self.ids = [*chars, self.eos]
        self._data = (llama_cpp.llama_token_data * len(self.ids))()

    def forced(self, gsmp: Any) -> tuple[str, bool]:
        """The characters ``gsmp`` (a grammar sampler) forces from here, accepted into it; and
        whether the grammar is complete (only end-of-text is allowed)."""
        import llama_cpp

        out: list[str] = []
        data, n = self._data, len(self.ids)
        while len(out) < FORCED_MAX:
            for i, t in enumerate(self.ids):
                data[i].id, data[i].logit, data[i].p = t, 0.0, 0.0
            arr = llama_cpp.llama_token_data_array(data, n, -1, False)
            llama_cpp.llama_sampler_apply(gsmp, ctypes.byref(arr))
            allowed = [int(data[i].id) for i in range(arr.size) if not math.isinf(data[i].logit)]
            if allowed == [self.eos]:
                return "".join(out), True
            if len(allowed) != 1 or allowed[0] == self.eos:
                break
            llama_cpp.llama_sampler_accept(gsmp, allowed[0])
            out.append(self.chars[allowed[0]])
        return "".join(out), False

    def generate(self, prompt: list[int], gbnf: str, *, max_tokens: int, deadline: float,
                 stop_after: tuple[str, int] | None = None) -> Generated:
        """Greedy answer to ``prompt`` under ``gbnf`` (compiled before: grammar.build).
        ``stop_after=(marker, n)``: at most n sampled tokens once the text contains marker.
        Raises TimeoutError past ``deadline`` (time.monotonic())."""
        import llama_cpp

        llm = self.llm
        gsmp = llama_cpp.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        if not gsmp:
            raise ValueError("llama.cpp refused the grammar")
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, gsmp)  # the chain owns and frees it
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        try:
            seq = list(prompt)
            out = bytearray()
            sampled = forced = evaluated = 0
            reused: int | None = None
            first: float | None = None
            after: int | None = None  # sampled tokens since stop_after's marker
            while True:
                text, done = self.forced(gsmp)
                if text:
                    toks = llm.tokenize(text.encode(), add_bos=False, special=False)
                    seq += toks
                    out += text.encode()
                    forced += len(toks)
                if done or sampled + forced >= max_tokens:
                    break
                if stop_after is not None and after is None and stop_after[0] in out.decode(errors="ignore"):
                    after = 0
                if after is not None and after >= stop_after[1]:  # type: ignore[index]
                    break
                if len(seq) >= llm.n_ctx():
                    raise ValueError(f"answer reached the context size ({llm.n_ctx()} tokens)")
                if reused is None:
                    # llama.cpp keeps the longest common prefix of its cache; at least the last
                    # token is evaluated again, for its logits
                    reused = min(common_prefix(llm.input_ids[:llm.n_tokens], seq), len(prompt),
                                 len(seq) - 1)
                    llm.n_tokens = reused
                evaluated += len(seq) - max(llm.n_tokens, len(prompt))
                llm.eval(seq[llm.n_tokens:])  # the last sampled token and the forced text, in one batch
                tok = llama_cpp.llama_sampler_sample(chain, llm._ctx.ctx, -1)  # the grammar accepts it
                if first is None:
                    first = time.monotonic()
                if llama_cpp.llama_vocab_is_eog(self.vocab, tok):
                    break
                seq.append(tok)
                out += llm.detokenize([tok])
                sampled += 1
                if after is not None:
                    after += 1
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{sampled} tokens generated")
        finally:
            llama_cpp.llama_sampler_free(chain)
        return Generated(text=out.decode(errors="replace"), sampled=sampled, forced=forced,
                         reused=reused or 0, evaluated=evaluated, first_s=first or time.monotonic())


def common_prefix(a: Any, b: list[int]) -> int:
    """How many leading tokens ``a`` (a KV cache's) and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):  # a is the longer cache, b the prompt
        if x != y:
            break
        n += 1
    return n
