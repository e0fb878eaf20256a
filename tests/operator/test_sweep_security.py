"""A sweep is the operator writing jobs on a user's behalf: what it echoes and what the apiserver refuses it, against
a real kube-apiserver with the operator running as its ServiceAccount. A credential written into an override's
value is never repeated (status, Events, the operator's log)."""

from __future__ import annotations

import json

import pytest
from support.sweeps import sweep_manifest

pytestmark = pytest.mark.integration
SECRET = "wJalrXUtnFEMIEXAMPLESECRET"
KEY = "AKIAEXAMPLEKEY"


def test_a_credential_in_an_override_fails_the_sweep_without_being_echoed_anywhere(sweeps, start_operator):
    operator = start_operator()
    values = [f"s3://{KEY}:{SECRET}@bucket/m", f"s3:///{KEY}:{SECRET}@bucket/m", f"s3:/{KEY}:{SECRET}@bucket/m"]
    sweeps.create(sweep_manifest("leaky", {"parameters": [{"path": "model.source", "values": values}]}))

    status = sweeps.wait_phase("leaky", "Failed")
    failed = sweeps.condition("leaky", "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.parameters[0].values[2] (model.source=" in failed["message"]
    assert "must not carry credentials" in failed["message"]
    events = sweeps.events("leaky")
    assert ("Warning", "InvalidSpec") in [(t, r) for t, r, _ in events]
    echoed = json.dumps(status) + json.dumps(events) + operator.log.read_text()
    assert "InvalidSpec" in operator.log.read_text()
    assert SECRET not in echoed and KEY not in echoed
