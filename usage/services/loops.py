"""Runaway-loop rule: among a session's last 5 iterations (by iteration_index), four consecutive ones whose
prompt tokens each grow more than 1.4× over the one before (three ratios above 1.4)."""

GROWTH_RATIO = 1.4
RUN_LENGTH = 4


def runaway_loop_window(recent_prompts: dict) -> dict | None:
    """The latest qualifying run as {"iterations": [...], "prompt_tokens": [...], "ratios": [...]}, or None."""
    items = sorted((int(k), int(v)) for k, v in recent_prompts.items())
    found = None
    for start in range(0, len(items) - RUN_LENGTH + 1):
        run = items[start:start + RUN_LENGTH]
        ratios = []
        for (_, before), (_, after) in zip(run, run[1:], strict=False):
            if before <= 0:
                break
            ratios.append(after / before)
        if len(ratios) == RUN_LENGTH - 1 and all(r > GROWTH_RATIO for r in ratios):
            found = {
                "iterations": [idx for idx, _ in run],
                "prompt_tokens": [tokens for _, tokens in run],
                "ratios": [round(r, 4) for r in ratios],
            }
    return found
