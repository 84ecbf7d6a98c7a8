"""Pure Lync rules: orbits, pools, Call Park settings, admin state, music checks (no I/O)."""
