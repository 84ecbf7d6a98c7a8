"""callpark.node: the park node (supervisor and pjsua2 workers).

Read in this order: ``supervisor`` (life cycle and loop, composes the rest), ``context``
(what the parts share), ``workers`` (processes and channels), ``dispatch`` (worker
messages), ``decisions`` (park and retrieve), ``calls`` (held records, frees),
``ringback``, ``takeover`` (takeovers and the drain scan), ``views`` (ranges, owners,
music); then ``protocol``, ``config``, ``membership``, ``metrics``, ``adminapi`` and
``worker`` (the pjsua2 process).
"""
