"""A pickle payload that would run a shell command when unpickled (the attack a safe loader must refuse)."""

import os


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
