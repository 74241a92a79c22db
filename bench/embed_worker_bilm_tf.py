"""bench/embed.py's third side: the original implementation, bilm-tf (unmodified, from
../shared/peers/bilm-tf) on TensorFlow 2.x CPU through tf.compat.v1, in the environment that
../shared/peers/setup_bilm_tf.sh makes, answering bench/workers.py's commands. Stateless as the others: its LSTM state variables
are zeroed before every batch. Run by bench/embed.py, not by hand.
"""

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()
sys.modules["tensorflow"] = tf  # bilm-tf imports tensorflow and uses the v1 API
BILM_TF = Path(__file__).resolve().parents[2] / "shared" / "peers" / "bilm-tf"
sys.path.insert(0, str(BILM_TF))

from bilm import Batcher, BidirectionalLanguageModel  # noqa: E402
from workers import serve  # noqa: E402


def bilm_tf(options, weights, sentences, batch_size, threads, by_length):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as vocab:
        words = sorted({t for s in sentences for t in s})
        vocab.write("\n".join(["<S>", "</S>", "<UNK>", *words]) + "\n")
    batcher = Batcher(vocab.name, 50)
    ids = tf.placeholder("int32", shape=(None, None, 50))
    with contextlib.redirect_stdout(sys.stderr):  # it prints while it builds its graph
        model = BidirectionalLanguageModel(options, weights, max_batch_size=max(batch_size, 256))
        ops = model(ids)
    states = [v for direction in model._graphs[ids].lstm_init_states.values() for layer in direction for v in layer]
    reset = tf.variables_initializer(states)
    config = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
    session = tf.Session(config=config)
    session.run(tf.global_variables_initializer())

    def embed(batch_sentences):
        order = list(range(len(batch_sentences)))
        if by_length:
            order.sort(key=lambda i: len(batch_sentences[i]))
        results = [None] * len(batch_sentences)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            session.run(reset)  # stateless, as the others: every sentence from a zero state
            char_ids = batcher.batch_sentences([batch_sentences[i] for i in rows])
            layers = session.run(ops["lm_embeddings"], feed_dict={ids: char_ids})  # (B, 3, T, 1024), no <S> / </S>
            for k, i in enumerate(rows):
                n = len(batch_sentences[i])
                results[i] = layers[k, :, :n]
        return results

    return embed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("options")
    parser.add_argument("weights")
    parser.add_argument("workload")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--by-length", action="store_true")
    args = parser.parse_args()
    sentences = [line.split() for line in open(args.workload, encoding="utf-8")]
    embed = bilm_tf(args.options, args.weights, sentences, args.batch_size, args.threads, args.by_length)
    serve(embed, sentences)

if __name__ == "__main__":
    main()
