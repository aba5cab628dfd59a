"""A process writing decisions to a shared store from several threads: ``python store_writer.py STORE TAG
THREADS CALLS``. Each call is one single-row decision with the id ``TAG-<thread>-<call>``."""

import sys
import threading

import numpy as np
from sklearn.linear_model import LogisticRegression

import otel_rai


def main(path: str, tag: str, threads: int, calls: int) -> int:
    X = np.random.default_rng(0).normal(size=(64, 4))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    otel_rai.instrument(store=path, hash_key="store-writer-key-0123456789abcdef")

    def work(t: int) -> None:
        for i in range(calls):
            with otel_rai.decisions(ids=[f"{tag}-{t}-{i}"]):
                model.predict(X[i % 64 : i % 64 + 1])

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    complete = otel_rai.flush(120).complete
    otel_rai.uninstrument()
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
