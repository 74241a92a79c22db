"""A plain numpy biLM written straight from bilm-tf's equations: one sentence, one time step,
one direction at a time, float64, reading the HDF5 arrays by their published names. It shares no
code with torch_elmo; the fixture test pins it to the original, and the other tests use it as an
oracle where the original left no fixture (skip connections, long sentences)."""

import json

import h5py
import numpy as np

from torch_elmo.chars import BOS_TOKEN, EOS_TOKEN, token_to_char_ids


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class ReferenceBiLM:
    def __init__(self, options_file, weight_file):
        self.options = json.load(open(options_file))
        with h5py.File(weight_file, "r") as f:
            self.w = {}
            f.visititems(lambda name, obj: self.w.__setitem__(name, obj[...].astype(np.float64))
                         if isinstance(obj, h5py.Dataset) else None)
        self.char_embed = np.vstack([np.zeros((1, self.w["char_embed"].shape[1])), self.w["char_embed"]])

    def token(self, tok):
        cnn = self.options["char_cnn"]
        x = self.char_embed[np.array(token_to_char_ids(tok))]  # (50, E)
        pooled = []
        for i, (width, _) in enumerate(cnn["filters"]):
            W, b = self.w[f"CNN/W_cnn_{i}"][0], self.w[f"CNN/b_cnn_{i}"]  # (width, E, n)
            windows = np.lib.stride_tricks.sliding_window_view(x, width, axis=0)  # (50-w+1, E, w)
            conv = np.einsum("pew,wen->pn", windows, W) + b
            pooled.append(conv.max(axis=0))
        h = np.concatenate(pooled)
        h = np.maximum(h, 0) if cnn["activation"] == "relu" else np.tanh(h)
        for k in range(cnn["n_highway"]):
            g = _sigmoid(h @ self.w[f"CNN_high_{k}/W_carry"] + self.w[f"CNN_high_{k}/b_carry"])
            t = np.maximum(h @ self.w[f"CNN_high_{k}/W_transform"] + self.w[f"CNN_high_{k}/b_transform"], 0)
            h = g * t + (1.0 - g) * h
        if "CNN_proj/W_proj" in self.w:
            h = h @ self.w["CNN_proj/W_proj"] + self.w["CNN_proj/b_proj"]
        return h

    def cell(self, direction, layer, x, m, c):
        lstm = self.options["lstm"]
        p = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"
        z = np.concatenate([x, m]) @ self.w[f"{p}/W_0"] + self.w[f"{p}/B"]
        i, j, f, o = np.split(z, 4)
        c = _sigmoid(f + 1.0) * c + _sigmoid(i) * np.tanh(j)
        c = np.clip(c, -lstm["cell_clip"], lstm["cell_clip"])
        m = _sigmoid(o) * np.tanh(c) @ self.w[f"{p}/W_P_0"]
        return np.clip(m, -lstm["proj_clip"], lstm["proj_clip"]), c

    def sentence(self, tokens, states=None):
        """Layers (L+1, n+2, 2P) with boundaries, and the final states (stateless when None)."""
        lstm = self.options["lstm"]
        L, H, P = lstm["n_layers"], lstm["dim"], lstm["projection_dim"]
        xs = np.stack([self.token(t) for t in [BOS_TOKEN, *tokens, EOS_TOKEN]])
        layers = [np.concatenate([xs, xs], axis=1)]
        states = states or {(d, k): (np.zeros(P), np.zeros(H)) for d in range(2) for k in range(L)}
        finals = {}
        per_direction = []
        for d in range(2):
            inputs = xs if d == 0 else xs[::-1]
            outs = []
            for k in range(L):
                m, c = states[(d, k)]
                out = []
                for x in inputs:
                    m, c = self.cell(d, k, x, m, c)
                    out.append(m)
                out = np.stack(out)
                if lstm["use_skip_connections"] and k > 0:
                    out = out + inputs
                finals[(d, k)] = (m, c)
                outs.append(out if d == 0 else out[::-1])
                inputs = out
            per_direction.append(outs)
        layers += [np.concatenate([per_direction[0][k], per_direction[1][k]], axis=1) for k in range(L)]
        return np.stack(layers), finals
