"""One side of bench/efml_embed.py: loads an ELMoForManyLangs model with one implementation (ours,
or its own Embedder in the peer environment) and embeds the workload when told to, so that both
run in their own interpreter, alternated.

Commands on stdin, one JSON line each on stdout: `pass` embeds the whole workload once, `check N`
returns the first N sentences' vectors (a fresh state for every batch on its side), `peak`
measures this process's float32 matmul rate, `exit` reports peak RSS and leaves. Run by bench/efml_embed.py, not by hand.
"""

import argparse
import json
import logging
import resource
import sys
import time

import numpy as np
import torch


def ours(model, batch_size):
    from torch_elmo import ElmoEmbedder

    embedder = ElmoEmbedder(model)

    def embed(sentences, fresh=False):
        embedder.clear_token_cache()  # each pass is a fresh job: no token vectors from the last one
        return list(embedder.embed_sentences(sentences, batch_size=batch_size))

    return embed


def theirs(model, batch_size):
    logging.getLogger("elmoformanylangs").setLevel(logging.ERROR)
    from elmoformanylangs import Embedder

    embedder = Embedder(model, batch_size=batch_size)

    def embed(sentences, fresh=False):
        embedder.model.encoder._states = None
        if not fresh:  # as its users run it: one call, its own batching (by length), its state carried
            with torch.no_grad():
                return embedder.sents2elmo(sentences, output_layer=-2)
        arrays = []
        for start in range(0, len(sentences), batch_size):
            embedder.model.encoder._states = None
            with torch.no_grad():
                arrays += embedder.sents2elmo(sentences[start : start + batch_size], output_layer=-2)
        return arrays

    return embed


def matmul_peak(seconds: float = 3.0) -> float:
    """This process's float32 matmul rate (2048 x 2048), the best of a few seconds."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * 2048**3 / (time.perf_counter() - t))
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("impl", choices=["ours", "theirs"])
    parser.add_argument("model")
    parser.add_argument("workload")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sentences = [line.split(" ") if line.strip() else [] for line in
                 open(args.workload, encoding="utf-8").read().split("\n")[:-1]]
    embed = (ours if args.impl == "ours" else theirs)(args.model, args.batch_size)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "pass":
            t = time.perf_counter()
            arrays = embed(sentences)
            seconds = time.perf_counter() - t
            print(json.dumps({"seconds": seconds, "tokens": sum(a.shape[1] for a in arrays)}), flush=True)
        elif command[0] == "peak":
            print(json.dumps({"flops": matmul_peak()}), flush=True)
        elif command[0] == "check":
            arrays = embed(sentences[: int(command[1])], fresh=True)
            print(json.dumps({"arrays": [a.astype(np.float64).tolist() for a in arrays]}), flush=True)
        elif command[0] == "exit":
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({"peak_rss_mb": rss_mb}), flush=True)
            return


if __name__ == "__main__":
    main()
