"""One side of bench/embed.py: loads a model with one implementation (ours, AllenNLP) and answers
bench/workers.py's commands. Run by bench/embed.py, not by hand.
"""

import argparse
import functools
import time

import torch
from workers import serve


def ours(options, weights, batch_size, dtype, distinct_gates=True, implementation="fast", fused=True, device="cpu",
         overlap=True):
    from torch_elmo import BiLM, ElmoEmbedder

    if not distinct_gates:  # the ablation: the first layer's gates at every position
        BiLM.DISTINCT_TOKENS_AT_MOST = 0
    if not fused:  # the ablation: each step's elementwise part op by op
        from torch_elmo.kernels import Fused

        Fused.enabled = False
    if not overlap:  # the ablation on a GPU: each batch's arrays copied to the host before the next batch starts
        ElmoEmbedder.OVERLAP_COPIES = False
    extra = {"implementation": implementation} if implementation != "fast" else {}  # older commits lack it
    embedder = ElmoEmbedder(options, weights, dtype=getattr(torch, dtype), device=device, **extra)

    counted = {"first_layer_rows": 0}  # rows of the first layer's input product: distinct tokens, or every position
    first_layer_input = getattr(embedder.bilm, "_first_layer_input", None)  # older commits lack it
    if first_layer_input is not None:
        def counting(*args, **kwargs):
            x, rows = first_layer_input(*args, **kwargs)
            counted["first_layer_rows"] += x.shape[1]
            return x, rows

        embedder.bilm._first_layer_input = counting

    def embed(sentences):
        embedder.clear_token_cache()  # each pass is a fresh job: no token vectors from the last one
        counted["first_layer_rows"] = 0
        return list(embedder.embed_sentences(sentences, batch_size=batch_size))

    def counts():
        gpu = {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20} if device != "cpu" else {}
        return {**(counted if first_layer_input is not None else {}), **gpu}

    embed.counts = counts
    return embed


def allennlp(options, weights, batch_size, dtype, by_length=False):
    import warnings

    warnings.filterwarnings("ignore")
    from allennlp.modules.elmo import _ElmoBiLm, batch_to_ids

    bilm = _ElmoBiLm(options, weights).eval().to(getattr(torch, dtype))

    def embed(sentences):
        order = list(range(len(sentences)))  # in input order, as AllenNLP's own embedding tools run
        if by_length:
            order.sort(key=lambda i: len(sentences[i]))
        results = [None] * len(sentences)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                bilm._elmo_lstm.reset_states()  # the job is stateless
                out = bilm(batch_to_ids([sentences[i] for i in rows]))
                layers = torch.stack(out["activations"], dim=1)[:, :, 1:-1]  # drop <S>, </S>
                lengths = (out["mask"].sum(dim=1) - 2).tolist()
                for k, i in enumerate(rows):
                    results[i] = layers[k, :, : lengths[k]].numpy()
        return results

    return embed


def matmul_peak(seconds: float = 3.0, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """The best FLOP/s of square matrix products (2048 on a CPU, 8192 on a GPU, where float32
    means TF32 once torch.backends.cuda.matmul.allow_tf32 is set). On a CPU the best of both of
    PyTorch's matmul libraries, MKL (torch.matmul) and oneDNN (its linear, which ours' embedding
    steps use): on some CPUs oneDNN's float32 products run faster than MKL's."""
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device != "cpu" else lambda: None
    products = [lambda: a @ b]
    if device == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        b_t = b.t()
        products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [], ""))
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for product in products:
            sync()
            t = time.perf_counter()
            for _ in range(4):
                product()
            sync()
            best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("impl", choices=["ours", "allennlp"])
    parser.add_argument("options")
    parser.add_argument("weights")
    parser.add_argument("workload")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--by-length", action="store_true", help="allennlp: batch sentences grouped by length")
    parser.add_argument("--implementation", default="fast", help="ours: fast, plain or int8")
    parser.add_argument("--no-distinct-gates", action="store_true",
                        help="ours: the first layer's input gates at every position, not once per distinct token")
    parser.add_argument("--unfused", action="store_true", help="ours: each LSTM step's elementwise part op by op")
    parser.add_argument("--device", default="cpu", help="ours: cpu or cuda")
    parser.add_argument("--no-overlap", action="store_true",
                        help="ours on a GPU: each batch's arrays copied to the host before the next batch starts")
    parser.add_argument("--tf32", action="store_true", help="ours on a GPU: float32 products in TF32 (not exact)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    sentences = [line.split() for line in open(args.workload, encoding="utf-8")]
    if args.impl == "ours":
        embed = ours(args.options, args.weights, args.batch_size, args.dtype, not args.no_distinct_gates,
                     args.implementation, not args.unfused, args.device, not args.no_overlap)
    else:
        embed = allennlp(args.options, args.weights, args.batch_size, args.dtype, args.by_length)
    peak = functools.partial(matmul_peak, device=args.device, dtype=getattr(torch, args.dtype))
    serve(embed, sentences, peak=peak, counts=getattr(embed, "counts", None))

if __name__ == "__main__":
    main()
