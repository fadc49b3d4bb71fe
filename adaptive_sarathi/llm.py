"""The offline API: LLM(...).generate(prompts, params) and .chat(messages, params)."""

from __future__ import annotations

from typing import Sequence

from tqdm import tqdm

from adaptive_sarathi.engine.factory import EngineArgs, create_engine
from adaptive_sarathi.engine.outputs import RequestOutput
from adaptive_sarathi.engine.sampling_params import SamplingParams

Prompt = str | list[int]


class LLM:
    """An engine for batch generation in this process.

    LLM(model=None) serves the embedded SmolLM2-135M-Instruct; any EngineArgs field may be given
    as a keyword (scheduler="sarathi", token_budget=512, max_chunk=None, tensor_parallel_size=1, ...).
    With tensor_parallel_size > 1 it starts worker processes: call close() (or use `with`) to end them.
    """

    def __init__(self, model: str | None = None, **engine_args):
        self.engine = create_engine(EngineArgs(model=model, **engine_args))

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def close(self) -> None:
        """Release the engine's worker processes (tensor_parallel_size > 1); a no-op otherwise.
        The LLM is unusable afterwards. Also runs at interpreter exit."""
        self.engine.executor.shutdown()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = False, slo_class: str | None = None) -> list[RequestOutput]:
        """Generate for every prompt (strings or token-id lists) submitted together; returns the
        final output of each, in prompt order. `slo_class` names the SLO policy class of every
        prompt and comes back in each output's slo_class; it is carried, not checked (this API
        holds no SLO policy). Raises InvalidRequestError before anything runs if any prompt or
        parameter is invalid."""
        prompt_list = _as_prompt_list(prompts)
        param_list = _broadcast(params, len(prompt_list))
        ids = []
        try:
            for prompt, p in zip(prompt_list, param_list):
                ids.append(self.engine.add_request(prompt, p, slo_class=slo_class))
        except ValueError:
            for rid in ids:
                self.engine.abort_request(rid)
            raise
        finals: dict[str, RequestOutput] = {}
        with tqdm(total=len(ids), disable=not use_tqdm, desc="generate") as bar:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.finished:
                        finals[out.request_id] = out
                        bar.update(1)
        return [finals[rid] for rid in ids]

    def chat(self, messages: list[dict] | list[list[dict]],
             params: SamplingParams | Sequence[SamplingParams] | None = None) -> list[RequestOutput]:
        """Apply the model's chat template to one conversation (or a list of them) and generate."""
        if self.tokenizer is None:
            raise ValueError("model has no tokenizer, so no chat template: use generate() with token ids")
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
        return self.generate(prompts, params)


def _as_prompt_list(prompts: Prompt | Sequence[Prompt]) -> list[Prompt]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(t, int) for t in prompts):
        return [prompts]  # a single token-id prompt
    return prompts


def _broadcast(params, n: int) -> list[SamplingParams]:
    if params is None or isinstance(params, SamplingParams):
        return [params or SamplingParams()] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"params has {len(params)} entries for {n} prompts: pass one per prompt or a single one")
    return params
