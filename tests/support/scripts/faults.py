"""Test-only mitmproxy script: inject faults into a running mitmdump with the Expect-CT addon.

* `--set test_fault_evaluate=true` makes every CT policy evaluation raise (patches
  `expect_ct.policy.evaluate` in the running process), as a bug in our own code would.
* `http://control.test/set?NAME=VALUE` (a plain-HTTP request through the proxy) changes an
  option at runtime, as `:set NAME=VALUE` in mitmproxy's console would, and answers 200 with
  the new value or 400 with the OptionsError text. The request never leaves the proxy.
"""

import urllib.parse

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http

import expect_ct.policy


class Faults:
    def __init__(self):
        self.original = expect_ct.policy.evaluate

    def load(self, loader):
        loader.add_option("test_fault_evaluate", bool, False, "make CT evaluation raise")

    def configure(self, updated):
        if "test_fault_evaluate" not in updated:
            return
        if ctx.options.test_fault_evaluate:

            def evaluate(*args, **kwargs):
                raise RuntimeError("injected evaluation fault")

            expect_ct.policy.evaluate = evaluate
        else:
            expect_ct.policy.evaluate = self.original

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.pretty_host != "control.test" or flow.request.path.split("?")[0] != "/set":
            return
        changes = dict(urllib.parse.parse_qsl(flow.request.path.split("?", 1)[1]))
        try:
            ctx.options.set(*(f"{name}={value}" for name, value in changes.items()))
        except exceptions.OptionsError as e:
            flow.response = http.Response.make(400, str(e).encode())
            return
        values = {name: getattr(ctx.options, name) for name in changes}
        flow.response = http.Response.make(200, repr(values).encode())


addons = [Faults()]
