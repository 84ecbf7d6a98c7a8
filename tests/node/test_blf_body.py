"""The dialog-info document a node publishes for an orbit (RFC 4235), read back by the watcher's parser."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from callpark.lab.blf import NS, parse_dialog_info
from callpark.node.blf import CONFIRMED, TERMINATED, dialog_info, orbit_uri


def test_orbit_uri_keeps_star_and_escapes_hash() -> None:
    assert orbit_uri("7001", "callpark.test") == "sip:7001@callpark.test"
    assert orbit_uri("*7100", "callpark.test") == "sip:*7100@callpark.test"
    assert orbit_uri("#7100", "callpark.test") == "sip:%237100@callpark.test"


def test_dialog_info_names_the_park_and_dials_the_orbit() -> None:
    entity = orbit_uri("7001", "callpark.test")
    doc = dialog_info(entity, "pk-1", CONFIRMED, 'sip:"al&ice"@callpark.test')
    root = ET.fromstring(doc)
    assert root.tag == f"{NS}dialog-info" and root.get("entity") == entity and root.get("state") == "full"
    (dialog,) = parse_dialog_info(doc.decode())
    assert (dialog.id, dialog.state) == ("pk-1", CONFIRMED)
    assert dialog.remote_target == entity and dialog.remote_identity == entity
    xml_dialog = root.find(f"{NS}dialog")
    assert xml_dialog is not None
    assert xml_dialog.get("call-id") is None, "no dialog ids: an INVITE/Replaces pickup would hang up the caller"
    assert root.find(f"{NS}dialog/{NS}remote/{NS}identity").get("display") == '"al&ice"'  # type: ignore[union-attr]


def test_terminated_document() -> None:
    (dialog,) = parse_dialog_info(dialog_info("sip:7001@x", "pk-1", TERMINATED).decode())
    assert dialog.state == TERMINATED
