"""The engine: requests, the paged KV block manager, schedulers, the model and its runner, the
simulated executor and the engine loop (LLMEngine).

It owns the contracts the controller implements and reads (engine/budget.py: StepBudget,
BudgetPolicy, FixedBudget; engine/stats.py: EngineState, StepStats) and imports nothing from
controller/ or the service layer; kernels/ is the only floor below it.
"""
