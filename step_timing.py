"""--timing-breakdown: where a training step's time goes. Forward (with the loss), backward and the
optimizer step are each timed with the device synchronised before and after, so the log line can say
what share of the iterations' time each took and what was left (data, logging, the loop). The
synchronisation removes whatever overlap there was between the parts (and costs a host round trip
three times a micro-batch), so a run measured for speed leaves the flag off."""

import re
import time

from deepspeed.accelerator import get_accelerator

PARTS = ("forward+loss", "backward", "optimizer")
_LOGGED = re.compile(r" (forward\+loss|backward|optimizer|rest) share: (-?[0-9.]+)%")


class StepParts:
    def __init__(self):
        self.seconds = dict.fromkeys(PARTS, 0.0)

    def run(self, part, call, *args):
        """call(*args), its time (device synchronised around it) added to `part`."""
        get_accelerator().synchronize()
        started = time.perf_counter()
        result = call(*args)
        get_accelerator().synchronize()
        self.seconds[part] += time.perf_counter() - started
        return result

    def shares(self, total_seconds):
        """{part: share of total_seconds} with "rest" for what the parts leave; the counts start again."""
        shares = {part: seconds / total_seconds for part, seconds in self.seconds.items()}
        shares["rest"] = 1.0 - sum(shares.values())
        self.seconds = dict.fromkeys(PARTS, 0.0)
        return shares


def shares_logged(line):
    """{part: percent} from a log line that --timing-breakdown wrote (empty without it)."""
    return {part: float(percent) for part, percent in _LOGGED.findall(line)}
