"""Data-parallel training with torch.distributed (gloo, 2 CPU processes)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torch_elmo.config import TrainConfig
from torch_elmo.data import LMBatch, Vocabulary
from torch_elmo.lm import LanguageModel
from torch_elmo.trainer import Trainer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "bilm-tf"
TRAIN = SHARED / "train"
TINY = {"filters": [[1, 8], [2, 8], [3, 16], [4, 32], [5, 64]], "char_embed_dim": 4, "n_highway": 1,
        "lstm_dim": 16, "projection_dim": 8, "n_layers": 2, "use_skip_connections": True}


def _join(rank: int, world: int, rendezvous: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)


def _config(tmp: str, **kw) -> TrainConfig:
    values = dict(train_files=str(TRAIN / "data.txt"), heldout_files=str(TRAIN / "data.txt"), vocab=str(TRAIN / "vocab.txt"),
                  run_dir=f"{tmp}/run", bilm=dict(TINY), unroll_steps=10, n_epochs=50, n_negative_samples=6,
                  checkpoint_every=0, progress=False, eval_batch_size=2)
    return TrainConfig(**{**values, **kw})


def _gradient_worker(rank: int, world: int, tmp: str) -> None:
    _join(rank, world, f"{tmp}/rendezvous")
    trainer = Trainer(_config(tmp, batch_size=2, n_negative_samples=0, dropout=0.0))
    batches = trainer.data.next_batch()
    out = trainer.ddp(batches, None)
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in trainer.model.named_parameters()}
    torch.save({"batches": batches, "grads": grads, "model": trainer.model.state_dict()}, f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


def test_averaged_gradient_equals_one_process_on_both_batches(tmp_path):
    tmp = str(tmp_path)
    mp.spawn(_gradient_worker, args=(2, tmp), nprocs=2, join=True)
    ranks = [torch.load(f"{tmp}/rank{r}.pt", weights_only=False) for r in range(2)]
    assert all(torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]) for k in ranks[0]["model"])
    assert ranks[0]["batches"][0].tokens != ranks[1]["batches"][0].tokens  # each rank its own share
    both = [LMBatch(*(torch.cat([getattr(a, f), getattr(b, f)]) for f in ("char_ids", "word_ids", "targets")),
                    a.tokens + b.tokens) for a, b in zip(ranks[0]["batches"], ranks[1]["batches"])]
    config = _config(tmp, dropout=0.0).bilm_config()
    model = LanguageModel(config, len(Vocabulary.read(TRAIN / "vocab.txt")))
    model.load_state_dict(ranks[0]["model"])
    model.train()
    model(both, None).loss.backward()
    for name, p in model.named_parameters():
        for r in range(2):
            assert torch.allclose(ranks[r]["grads"][name], p.grad, atol=1e-6, rtol=1e-4), name


def _train_worker(rank: int, world: int, tmp: str) -> None:
    _join(rank, world, f"{tmp}/rendezvous_train")
    trainer = Trainer(_config(tmp, batch_size=1))
    trainer.run(max_steps=100)  # stop, checkpoint (rank 0 writes every rank's position) ...
    dist.barrier()
    trainer = Trainer.resume(f"{tmp}/run")  # ... and resume with the same world size
    result = trainer.run()  # ends with a held-out evaluation, each rank scoring its share
    Path(f"{tmp}/result{rank}.json").write_text(json.dumps({**result, "step": trainer.step}))
    dist.destroy_process_group()


def test_two_processes_reach_the_perplexity_of_one(tmp_path):
    tmp = str(tmp_path)
    mp.spawn(_train_worker, args=(2, tmp), nprocs=2, join=True)
    result, other = (json.loads(Path(f"{tmp}/result{r}.json").read_text()) for r in range(2))
    assert result["tokens"] == 139 and other["ppl"] == result["ppl"]  # the shares' sums, added up
    assert result["step"] == 50 * 139 // 20  # batch 1 per process x 2 processes: one process's batch 2
    assert result["ppl"] < 20  # one process with batch 2 reaches ~15 (test_train_loop)
