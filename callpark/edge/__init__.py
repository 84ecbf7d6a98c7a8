"""The SIP edge: a Kamailio proxy/registrar in front of the park nodes.

* :mod:`callpark.edge.config`: typed description and the pure kamailio.cfg / dispatcher.list
  renderers (routing rules and the dispatcher set-id convention are documented there).
* :mod:`callpark.edge.process`: :class:`Edge`, the managed Kamailio process.
* :mod:`callpark.edge.sipping`: a tiny UDP SIP helper (request building, OPTIONS ping).
* :mod:`callpark.edge.rpc`: a jsonrpcs client (dispatcher.list, ul.dump, dispatcher.reload).
"""

from callpark.edge.config import (
    ConfigError,
    EdgeConfig,
    EdgeTimers,
    OrbitRange,
    PoolSpec,
    render_dispatcher_list,
    render_kamailio_cfg,
)
from callpark.edge.process import Edge, EdgeError, check_config
from callpark.edge.sipping import options_ping

__all__ = [
    "ConfigError",
    "Edge",
    "EdgeConfig",
    "EdgeError",
    "EdgeTimers",
    "OrbitRange",
    "PoolSpec",
    "check_config",
    "options_ping",
    "render_dispatcher_list",
    "render_kamailio_cfg",
]
