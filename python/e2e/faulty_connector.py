"""Fault injection for the e2e test (its name says so): the real connector, and the real
daemon really dies: SIGKILL right after the first lookup that found blocks, so the
onboard of those blocks fails and vLLM has to recompute them."""

from __future__ import annotations

import os
import select
import signal

from kvblockd.vllm import KvblockdConnector


class DaemonKillingConnector(KvblockdConnector):
    _killed = False

    def get_num_new_matched_tokens(self, request, num_computed_tokens):
        n, is_async = super().get_num_new_matched_tokens(request, num_computed_tokens)
        if n and not DaemonKillingConnector._killed:
            DaemonKillingConnector._killed = True
            pid = int(os.environ["KVB_E2E_KILL_PID"])
            fd = os.pidfd_open(pid)
            os.kill(pid, signal.SIGKILL)
            select.select([fd], [], [], 10.0)  # until it is gone (bounded)
            os.close(fd)
        return n, is_async
