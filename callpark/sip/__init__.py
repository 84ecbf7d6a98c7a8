"""Shared SIP layer: pure message helpers and pjsua2 pieces, one submodule each.

- :mod:`callpark.sip.message`: pure parsing/building (headers, tags, URIs, Replaces,
  Refer-To, :class:`~callpark.sip.message.DialogTracker`); the project's one SIP parser.
- :mod:`callpark.sip.reasons`: reason phrases park nodes send and the edge matches on.
- :mod:`callpark.sip.wake`: wake a pumping pjsua2 process (CRLFCRLF to its SIP port).
- :mod:`callpark.sip.endpoint`: silent tuned endpoint, accounts, op params, clean shutdown.
- :mod:`callpark.sip.call`: :class:`~callpark.sip.call.TrackedCall`, a ``pj.Call`` that
  learns its dialog tags from raw messages.
- :mod:`callpark.sip.pump`: the main-thread event loop (pump, reader thread queue,
  deferred actions, timers) of a single-threaded pjsua2 process.

Importing ``callpark.sip`` imports nothing else (no pjsua2): import the submodule you need.
"""
