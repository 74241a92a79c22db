"""One side of bench/efml_embed.py: loads an ELMoForManyLangs model with one implementation (ours,
or its own Embedder in the peer environment) and embeds the workload when told to, so that both
run in their own interpreter, alternated.

Commands on stdin, one JSON line each on stdout: `pass` embeds the whole workload once, `check N`
returns the first N sentences' vectors (a fresh state for every batch on its side), `peak`
measures this process's float32 matmul rate, `exit` reports peak RSS and leaves. Run by bench/efml_embed.py, not by hand.
"""

import argparse
import logging

import torch
from embed_worker import matmul_peak
from workers import serve


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
    serve(embed, sentences, peak=matmul_peak, check=lambda n: embed(sentences[:n], fresh=True))

if __name__ == "__main__":
    main()
