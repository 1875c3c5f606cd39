#!/usr/bin/env python3
"""goosebit (hawkBit's DDI API, from PyPI) for the didymos tests, on
127.0.0.1, with a control channel on stdin for the test's setup.

goosebit 0.2.12's upload refuses didymos bundles (it parses only SWU files
and squashfs RAUC bundles) and wants semver versions, so software is
registered in goosebit's own database through goosebit's own models, in
goosebit's own process and event loop (so its device cache stays right);
the DDI side then serves it unchanged. The DDI conversation with the agent
is goosebit's own, over HTTP.

  goosebit-test-server.py PORT DIR

Control lines on stdin (JSON), each answered by one JSON line on stdout:
  {"op": "software", "uri": URL, "version": V, "size": N, "sha1": H, "model": COMPATIBLE}
      -> {"id": SOFTWARE_ID}
  {"op": "assign", "device": ID, "software": SOFTWARE_ID}   -> {"ok": true}
  {"op": "withdraw", "device": ID}                           -> {"ok": true}
  {"op": "show", "device": ID}  -> {"state": ..., "sw_version": ..., "log": ..., "progress": ...}
"""
import asyncio
import json
import os
import sys

port, directory = int(sys.argv[1]), sys.argv[2]
os.environ["GOOSEBIT_PORT"] = str(port)
os.environ["GOOSEBIT_DB_URI"] = f"sqlite:///{directory}/db.sqlite3"
os.environ["GOOSEBIT_ARTIFACTS_DIR"] = f"{directory}/artifacts"
os.environ["GOOSEBIT_POLL_TIME"] = "00:00:30"
os.environ["GOOSEBIT_TRACK_DEVICE_IP"] = "false"

import uvicorn  # noqa: E402
from tortoise import Tortoise  # noqa: E402

from goosebit import app  # noqa: E402
from goosebit.db.config import TORTOISE_CONF  # noqa: E402
from goosebit.db.models import (  # noqa: E402
    Device,
    Hardware,
    Software,
    SoftwareImageFormat,
    UpdateModeEnum,
)
from goosebit.device_manager import DeviceManager  # noqa: E402


async def make_schema():
    await Tortoise.init(config=TORTOISE_CONF)
    await Tortoise.generate_schemas()
    await Tortoise.close_connections()


async def handle(cmd):
    op = cmd["op"]
    if op == "software":
        sw = await Software.create(
            uri=cmd["uri"],
            version=cmd["version"],
            size=cmd["size"],
            hash=cmd["sha1"],
            image_format=SoftwareImageFormat.RAUC,
        )
        hw = (await Hardware.get_or_create(model=cmd["model"], revision="default"))[0]
        await sw.compatibility.add(hw)
        await sw.save()
        return {"id": sw.id}
    device = await DeviceManager.get_device(cmd["device"])
    if op == "assign":
        sw = await Software.get(id=cmd["software"])
        await DeviceManager.update_update(device, UpdateModeEnum.ASSIGNED, sw)
        return {"ok": True}
    if op == "withdraw":
        await DeviceManager.update_update(device, UpdateModeEnum.PINNED, None)
        return {"ok": True}
    if op == "show":
        fresh = await Device.get(id=cmd["device"])
        return {
            "state": str(fresh.last_state),
            "sw_version": fresh.sw_version,
            "log": fresh.last_log,
            "progress": fresh.progress,
            "hardware": (await fresh.hardware).model,
        }
    return {"error": f"unknown op {op}"}


async def control():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            os._exit(0)
        try:
            answer = await handle(json.loads(line))
        except Exception as e:  # the test reads the error
            answer = {"error": repr(e)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


async def main():
    await make_schema()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    sys.stdout.write(json.dumps({"ready": port}) + "\n")
    sys.stdout.flush()
    await asyncio.gather(task, control())


asyncio.run(main())
