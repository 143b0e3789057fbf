"""TP=2 must reproduce the single-process loss and full gradients of the same model and batch."""

import torch

from glm_testing import GENERATIONS, make_batch, tiny_config
from multiprocess import run_distributed


def _worker(tp: int, out_path: str):
    import glm_megatron  # noqa: F401
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.context import initialize_distributed, shutdown
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.parallel.sharding import gather_full
    from glm_megatron.training.losses import language_model_loss

    ctx = initialize_distributed(tp, 1, "cpu")
    seed_all(ctx, 1234)
    results = {}
    for preset in GENERATIONS:
        for kind in ("blank", "causal"):
            model = build_model(tiny_config(preset), ctx, seed=7)
            batch = make_batch(kind)
            loss, _ = language_model_loss(model(batch), batch)
            loss.backward()
            group = ctx.tp_group
            grads = {n: gather_full(p.grad, p, group) for n, p in model.named_parameters()}
            weights = {n: gather_full(p.detach(), p, group) for n, p in model.named_parameters()}
            results[preset, kind] = (loss.item(), grads, weights)
    if ctx.is_rank_zero:
        torch.save(results, out_path)
    shutdown()


def test_tp2_matches_single_process(tmp_path):
    run_distributed(_worker, 1, 1, str(tmp_path / "tp1.pt"))
    run_distributed(_worker, 2, 2, str(tmp_path / "tp2.pt"))
    single, parallel = torch.load(tmp_path / "tp1.pt"), torch.load(tmp_path / "tp2.pt")
    assert single.keys() == parallel.keys()
    for key, (loss, grads, weights) in single.items():
        loss2, grads2, weights2 = parallel[key]
        assert abs(loss - loss2) < 1e-5 * max(1.0, abs(loss)), key
        for name in grads:
            assert torch.equal(weights[name], weights2[name]), (key, name, "init differs")
            torch.testing.assert_close(grads2[name], grads[name], rtol=1e-4, atol=1e-6,
                                       msg=lambda m: f"{key} {name}: {m}")
