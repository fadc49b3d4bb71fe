"""An SLO tightened at run time, under load, on the simulator: the adaptive policy holds the new
TBT target once it is in force (the engine stamps requests on arrival, as the server does)."""

from __future__ import annotations

import numpy as np

from adaptive_sarathi.controller.registry import make_policy
from adaptive_sarathi.controller.slo import slo_from_flags
from adaptive_sarathi.engine.config import SchedulerConfig
from adaptive_sarathi.engine.engine import LLMEngine
from adaptive_sarathi.engine.latency.roofline import roofline_from_spec
from adaptive_sarathi.engine.sampling_params import SamplingParams
from adaptive_sarathi.engine.schedulers import make_scheduler
from adaptive_sarathi.engine.simulator import DUMMY_TOKEN, SimulatedExecutor, VirtualClock, drive
from adaptive_sarathi.engine.simulator.admission import AdmissionGate, PendingRequest

CHANGE_AT_STEP, SETTLE_STEPS = 400, 200
LOOSE, TIGHT = slo_from_flags("ttft:5000,tbt:100", None), slo_from_flags("ttft:5000,tbt:50", None)


def requests(n: int = 300, qps: float = 12.0, seed: int = 0) -> list[PendingRequest]:
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / qps, n))
    prompts = np.clip(rng.lognormal(np.log(3000), 0.5, n), 32, 6000).astype(int)
    outputs = rng.integers(32, 128, n)
    return [PendingRequest(str(i), [i + 1] + [DUMMY_TOKEN] * (int(p) - 1),
                           SamplingParams(max_tokens=int(o), ignore_eos=True), float(t), None)
            for i, (t, p, o) in enumerate(zip(arrivals, prompts, outputs))]


def test_a_tbt_target_tightened_under_load_holds_200_steps_after_the_change():
    model = roofline_from_spec("h100:llama-3-8b")
    config = SchedulerConfig(name="sarathi", max_model_len=8192)
    blocks = model.num_kv_blocks(config.block_size, 0.9)
    clock = VirtualClock(0.0)
    policy = make_policy("adaptive", LOOSE, prior=model, seed=0)
    engine = LLMEngine(make_scheduler(config, blocks), SimulatedExecutor(model, clock, blocks, config.block_size),
                       policy, tokenizer=None, max_model_len=8192, eos_token_ids=(), clock=clock.now)
    step_end: list[float] = []

    def on_step(stats) -> None:
        step_end.append(clock.now())
        if len(step_end) == CHANGE_AT_STEP:
            policy.set_slo(TIGHT)  # what PUT /v1/slo_policy does, on the engine thread between two steps

    engine.stats_listeners.append(on_step)
    pending = requests()
    gate = AdmissionGate(pending)
    drive(engine, clock, [r.arrival_time_s for r in pending], gate=gate)
    assert not gate.refused and engine.num_steps > CHANGE_AT_STEP + 4 * SETTLE_STEPS
    window_start = step_end[CHANGE_AT_STEP + SETTLE_STEPS]
    gaps = np.concatenate([np.diff(t)[np.asarray(t[1:]) > window_start]
                           for t in (r.timeline.token_times for r in gate.admitted) if len(t) > 1])
    # Under load: before the change the policy took steps longer than the new target allows.
    durations = np.diff(step_end[:CHANGE_AT_STEP])
    assert np.mean(durations > TIGHT.tbt.target_s) > 0.1, "the load never needed more than the new target"
    assert len(gaps) > 10_000
    assert np.mean(gaps <= TIGHT.tbt.target_s) >= 0.99
