"""Test fixture: a Python module (raw bindings, no SDK) whose `describe` raises. Loading it
must fail with an error that carries the Python traceback the guest printed."""


class WitWorld:
    def describe(self):
        raise RuntimeError("this module cannot describe itself")

    def run(self, ctx, input):
        return "null"
