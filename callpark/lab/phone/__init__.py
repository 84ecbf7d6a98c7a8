"""A scriptable pjsua2 softphone: one process per phone, driven by JSON lines.

- :class:`callpark.lab.phone.harness.Phone` starts and drives a phone process (tests, CLI);
- ``python -m callpark.lab.phone`` is the phone process (:mod:`callpark.lab.phone.child`, its
  loop; :mod:`~callpark.lab.phone.calls`, :mod:`~callpark.lab.phone.commands` and
  :mod:`~callpark.lab.phone.media` its calls, command handlers, players and recorders);
- :mod:`callpark.lab.phone.protocol` documents the commands, replies and events.

Importing this package does not import pjsua2.
"""

from callpark.lab.phone.harness import Phone, PhoneError

__all__ = ["Phone", "PhoneError"]
