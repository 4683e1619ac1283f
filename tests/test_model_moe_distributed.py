import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vampdiffusion.models.moe import balance_loss


def _data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 8, generator=g)          # 2 blocks, global batch 6, 8 experts
    experts = logits.topk(2, dim=-1).indices             # (2, 6, 2)
    experts[:, :3] = torch.tensor([0, 1])                # rank 0's images all go to experts 0 and 1
    return logits, experts


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    logits, experts = _data()
    part = slice(3 * rank, 3 * rank + 3)
    local = logits[:, part].clone().requires_grad_(True)
    loss = balance_loss(local.softmax(-1), experts[:, part])
    loss.backward()
    torch.save({"loss": loss.detach(), "grad": local.grad}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes
def test_balance_loss_uses_the_global_batch_under_ddp(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    logits, experts = _data()
    full = logits.clone().requires_grad_(True)
    expected = balance_loss(full.softmax(-1), experts)
    expected.backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], expected.detach())
        # all-reduce backward sums over ranks (× world); DDP's gradient average divides it back
        torch.testing.assert_close(got["grad"] / 2, full.grad[:, 3 * rank:3 * rank + 3])
