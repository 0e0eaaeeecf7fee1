"""VOS (Du et al., "VOS: Learning What You Don't Know by Virtual Outlier Synthesis", ICLR 2022).

Virtual outliers are drawn in feature space, from class-conditional Gaussians (shared covariance)
fitted on a per-class queue of the features the final linear layer sees; the lowest-likelihood
draws go through that layer, and a learnable energy of their logits and of the ID logits feeds a
logistic regression (ID 1, outlier 0). The loss is CE + w·that regression's CE.

Pure tensor functions (queue update, Gaussian fit, sampling, energy, uncertainty loss) and
`VOSHead`, the learnable parts and the queues of a run. Everything stays on the batch's device and
never reads a device value on the host, so a training step keeps the GPU busy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COVARIANCE_JITTER = 1e-4  # the reference adds 0.0001·I to the shared covariance
SAMPLE_CHUNK = 2**24  # at most this many random numbers at once (C·sample_from·D would be 10⁹ for 200 classes)


def start_epoch(fraction: float, epochs: int) -> int:
    """The first (0-based) epoch with the uncertainty loss: the first one starting at or after
    `fraction` of the run (the reference's epoch 40 of 100 is 0.4). The 1e-9 absorbs 0.4·100 = 40.000…01."""
    return max(0, math.ceil(fraction * epochs - 1e-9))


def enqueue(queue: Tensor, count: Tensor, ptr: Tensor, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The per-class queues after a batch, as the reference keeps them; returns (queue, count, ptr).

    `queue` is C×N×D, `count` (C,) how many slots of each class are filled, `ptr` (C,) its oldest
    slot. Until every queue is full a sample fills the next free slot of its class, or is dropped
    if that class is full already; from then on each class keeps its last N features (a ring
    buffer: the same set of features as the reference's shifted queue, in another order, which
    neither the mean nor the covariance sees). Whether the queues are full is decided before the
    batch, as the reference does.
    """
    num_classes, n, dim = queue.shape
    full = (count == n).all()
    one_hot = (labels[:, None] == torch.arange(num_classes, device=labels.device)).long()
    seen = one_hot.cumsum(0)
    rank = seen.gather(1, labels[:, None]).squeeze(1) - 1  # earlier samples of the same class in the batch
    per_class = seen[-1] if len(labels) else torch.zeros_like(count)
    fill_slot = count[labels] + rank
    keep = torch.where(full, rank >= per_class[labels] - n, fill_slot < n)  # FIFO: the class's last N of the batch
    slot = torch.where(full, (ptr[labels] + rank) % n, fill_slot)
    index = torch.where(keep, labels * n + slot, num_classes * n)  # dropped samples go to a spare row
    rows = torch.cat([queue.reshape(num_classes * n, dim), queue.new_zeros(1, dim)])
    rows = rows.index_put((index,), features.detach().to(queue.dtype))
    new_count = torch.where(full, count, (count + per_class).clamp(max=n))
    new_ptr = torch.where(full, (ptr + per_class) % n, new_count % n)
    return rows[:-1].reshape(num_classes, n, dim), new_count, new_ptr


def fit_gaussians(queue: Tensor, jitter: float = COVARIANCE_JITTER) -> tuple[Tensor, Tensor]:
    """Class means (C×D) and the shared covariance (D×D) of the queues: the biased covariance of
    every feature centred on its class mean, + jitter·I (the reference's estimate)."""
    means = queue.mean(dim=1)
    centred = (queue - means[:, None]).reshape(-1, queue.shape[-1])
    cov = centred.T @ centred / centred.shape[0]
    return means, cov + jitter * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)


def sample_virtual_outliers(means: Tensor, cov: Tensor, sample_from: int, select: int,
                            generator: torch.Generator | None = None) -> Tensor:
    """`select` lowest-likelihood of `sample_from` draws from N(μ_c, Σ) per class: (C·select)×D, class by class.

    A draw is μ + L·ε with L the Cholesky factor of Σ and ε standard normal (as
    `MultivariateNormal.rsample`); its log-likelihood is −½‖ε‖² + a constant shared by the class's
    draws, so the lowest-likelihood draws are those of largest ‖ε‖, and only they are transformed.
    `cholesky_ex` does not check Σ on the host; Σ has the jitter, so it is positive definite.
    """
    num_classes, dim = means.shape
    chol = torch.linalg.cholesky_ex(cov).L
    per_chunk = max(1, SAMPLE_CHUNK // (sample_from * dim))
    picked = []
    for c0 in range(0, num_classes, per_chunk):
        c1 = min(num_classes, c0 + per_chunk)
        eps = torch.randn(c1 - c0, sample_from, dim, generator=generator, device=means.device, dtype=means.dtype)
        far = eps.square().sum(dim=2).topk(select, dim=1).indices
        picked.append(eps.gather(1, far[:, :, None].expand(-1, -1, dim)))
    eps = torch.cat(picked)
    return (means[:, None] + eps @ chol.T).reshape(num_classes * select, dim)


def learnable_energy(logits: Tensor, weight: Tensor) -> Tensor:
    """log Σ_k relu(w_k)·exp(z_k) per sample (the reference's weighted logsumexp, a negative
    energy: high on ID data); `weight` holds the C class weights (any shape with C entries)."""
    top = logits.detach().amax(dim=1, keepdim=True)  # for stability only: the value does not depend on it
    weighted = F.relu(weight.reshape(1, -1)) * torch.exp(logits - top)
    return top.squeeze(1) + torch.log(weighted.sum(dim=1))


def uncertainty_loss(energy_id: Tensor, energy_ood: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """CE of a logistic regression (a 1→2 linear layer: `weight` 2×1, `bias` 2) telling ID (class 1)
    from virtual outliers (class 0) by their energies; the mean over both sets together."""
    energies = torch.cat([energy_id, energy_ood]).unsqueeze(1)
    target = torch.cat([torch.ones(len(energy_id), dtype=torch.long, device=energies.device),
                        torch.zeros(len(energy_ood), dtype=torch.long, device=energies.device)])
    return F.cross_entropy(F.linear(energies, weight, bias), target)


class VOSHead(nn.Module):
    """What a VOS run learns and keeps besides the scored network: the energy's class weights, the
    logistic regression, and the queues (buffers, so they travel in the checkpoint).

    Kept outside `OODNet`, so the scored network (and `ascood-eval` of a VOS run) is unchanged.
    """

    def __init__(self, num_classes: int, feature_dim: int, sample_number: int):
        super().__init__()
        self.weight_energy = nn.Parameter(torch.empty(1, num_classes).uniform_())  # reference: uniform_ on Linear(C, 1)
        self.logistic = nn.Linear(1, 2)
        self.register_buffer("queue", torch.zeros(num_classes, sample_number, feature_dim))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))

    def full(self) -> Tensor:
        """0-d bool on the device: whether every class's queue is full."""
        return (self.count == self.queue.shape[1]).all()

    @torch.no_grad()
    def enqueue(self, features: Tensor, labels: Tensor) -> Tensor:
        """Add a batch to the queues; returns whether they were full before it (the reference's test)."""
        full = self.full()
        queue, count, ptr = enqueue(self.queue, self.count, self.ptr, features, labels)
        self.queue.copy_(queue)
        self.count.copy_(count)
        self.ptr.copy_(ptr)
        return full

    @torch.no_grad()
    def virtual_outliers(self, sample_from: int, select: int, generator: torch.Generator | None = None) -> Tensor:
        """Fitted and drawn in fp32 even inside an autocast region (a bf16 covariance is not positive definite)."""
        with torch.autocast(self.queue.device.type, enabled=False):
            return sample_virtual_outliers(*fit_gaussians(self.queue), sample_from, select, generator)

    def loss(self, logits_id: Tensor, logits_ood: Tensor) -> Tensor:
        """The uncertainty loss of ID logits and the virtual outliers' logits (fp32)."""
        return uncertainty_loss(learnable_energy(logits_id, self.weight_energy),
                                learnable_energy(logits_ood, self.weight_energy),
                                self.logistic.weight, self.logistic.bias)

    def average_gradients(self, accelerator) -> None:
        """Under DDP: the parameters' gradients averaged over ranks (what DDP does for the network's)."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if accelerator.num_processes > 1 and grads:
            flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
            for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                g.copy_(part.view_as(g))

    def broadcast(self, accelerator) -> None:
        """Under DDP: every rank starts from rank 0's parameters and queues."""
        if accelerator.num_processes > 1:
            for t in [*self.parameters(), *self.buffers()]:
                torch.distributed.broadcast(t.data, src=0)
