"""The consumer a user would write by hand, for bench_stream.py: redis-py and MLflow's pyfunc.

    python _bench_stream_naive.py REDIS_URL STREAM GROUP ARTIFACT_FOLDER

Reads batches of up to 500 events (XREADGROUP), predicts them with
``mlflow.pyfunc.load_model(ARTIFACT_FOLDER).predict(frame)``, XADDs one answer per event to
``STREAM-scored`` and acknowledges the batch. No input checks, no log, no dead letters, no
reclaim, no deduplication. Prints ``ready`` once consuming; SIGTERM stops it after its batch.
"""

from __future__ import annotations

import json
import signal
import sys

import mlflow.pyfunc
import pandas as pd
import redis


def main() -> None:
    url, stream, group, artifact = sys.argv[1:5]
    model = mlflow.pyfunc.load_model(artifact)
    client = redis.Redis.from_url(url)
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError:
        pass
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print("ready", flush=True)
    while not stopping:
        reply = client.xreadgroup(group, "naive", {stream: ">"}, count=500, block=500)
        for _, entries in reply or []:
            ids = [i for i, _ in entries]
            frame = pd.DataFrame([json.loads(fields[b"payload"]) for _, fields in entries])
            answers = model.predict(frame)
            pipe = client.pipeline(transaction=False)
            for source_id, prediction in zip(ids, answers["prediction"].tolist(), strict=True):
                pipe.xadd(f"{stream}-scored", {"source_id": source_id, "prediction": prediction})
            pipe.xack(stream, group, *ids)
            pipe.execute()


if __name__ == "__main__":
    main()
