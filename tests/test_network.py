"""The network as a block adjacency matrix (docs/theory.md sections 1 and 8)."""

import pytest
import torch
from _helpers import bad_argument

from dlnlab.network import (
    DeepLinearNetwork,
    Layout,
    adjacency_from_weights,
    flat_blocks,
    pack,
    product,
    unpack,
    weights_from_adjacency,
)

DIMS = [(11, 6, 6, 6, 6, 4), (3, 5, 2), (2, 4, 3, 5, 1), (4, 3)]


def random_weights(dims, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [
        scale * torch.randn(dims[j], dims[j - 1], generator=gen, dtype=torch.float64)
        for j in range(1, len(dims))
    ]


def explicit_product(weights):
    """W_h ... W_1 by torch.linalg.multi_dot (independent of network.product)."""
    return weights[0] if len(weights) == 1 else torch.linalg.multi_dot(list(reversed(weights)))


@pytest.mark.parametrize("dims", DIMS)
def test_dense_powers_have_the_predicted_blocks(dims):
    ws = random_weights(dims)
    net = DeepLinearNetwork.from_weights(ws)
    lay, h = net.layout, net.depth
    o = lay.offsets
    for k in range(1, h + 1):
        ak = net.dense_power(k).detach()
        expected = torch.zeros_like(ak)
        for j in range(0, h - k + 1):  # block (j+k, j) = W_{j+k} ... W_{j+1}
            expected[o[j + k] : o[j + k + 1], o[j] : o[j + 1]] = explicit_product(ws[j : j + k])
        torch.testing.assert_close(ak, expected, rtol=0, atol=1e-12)
    ah = net.dense_power(h).detach()
    block = ah[o[h] : o[h + 1], o[0] : o[1]]
    torch.testing.assert_close(block, explicit_product(ws), rtol=0, atol=1e-12)
    torch.testing.assert_close(net.product().detach(), explicit_product(ws), rtol=0, atol=1e-12)
    outside = ah.clone()
    outside[o[h] : o[h + 1], o[0] : o[1]] = 0
    assert torch.count_nonzero(outside) == 0  # exactly zero, not just small
    assert torch.count_nonzero(net.dense_power(h + 1)) == 0
    a = net.A.detach()
    assert torch.count_nonzero(a * ~net.mask()) == 0
    assert int(net.mask().sum()) == lay.n_weights == sum(d0 * d1 for d0, d1 in zip(dims[:-1], dims[1:]))


def test_product_batch_dims():
    dims = (3, 4, 2, 5)
    gen = torch.Generator().manual_seed(1)
    ws = [torch.randn(7, dims[j], dims[j - 1], generator=gen, dtype=torch.float64) for j in range(1, 4)]
    p = product(ws)
    assert p.shape == (7, 5, 3)
    for b in range(7):
        torch.testing.assert_close(p[b], explicit_product([w[b] for w in ws]), rtol=1e-13, atol=1e-13)
    a = adjacency_from_weights(ws)
    assert a.shape == (7, 14, 14)
    back = weights_from_adjacency(a, dims)
    for w, v in zip(ws, back):
        assert torch.equal(w, v)


@pytest.mark.parametrize("dims", DIMS)
def test_pack_unpack_round_trip(dims):
    lay = Layout(dims)
    ws = random_weights(dims, seed=2)
    theta = pack(ws)
    assert theta.shape == (lay.n_weights,)
    # W_1 row-major first
    assert torch.equal(theta[: ws[0].numel()], ws[0].reshape(-1))
    for w, v in zip(ws, unpack(theta, dims)):
        assert torch.equal(w, v)
    theta2 = torch.randn(3, lay.n_weights, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(pack(unpack(theta2, dims)), theta2)
    with pytest.raises(ValueError):
        unpack(theta[:-1], dims)


def test_unpack_returns_views():
    dims = (3, 4, 2)
    theta = torch.zeros(Layout(dims).n_weights, dtype=torch.float64)
    ws = unpack(theta, dims)
    ws[1][1, 2] = 5.0
    ws[0][0, 0] = -1.0
    assert theta[0] == -1.0
    assert theta[12 + 1 * 4 + 2] == 5.0  # W_2 starts after the 4*3 entries of W_1
    assert theta.count_nonzero() == 2


@pytest.mark.parametrize("dims", DIMS)
def test_flat_blocks_are_unpacks_views_and_fall_back_to_it(dims):
    """One as_strided view per layer of a contiguous theta (here a row of a stack: a storage offset): the
    elements unpack's views hold, writing through to theta; a column of a stack (not contiguous) and a
    theta that needs a gradient go through unpack itself."""
    lay = Layout(dims)
    stack = torch.randn(3, lay.n_weights, dtype=torch.float64)
    theta = stack[1]
    blocks = flat_blocks(theta, lay)
    assert [b.shape for b in blocks] == [b.shape for b in unpack(theta, lay)]
    assert all(torch.equal(b, u) and b.is_contiguous() for b, u in zip(blocks, unpack(theta, lay)))
    blocks[-1][-1, -1] = 7.0
    assert stack[1, -1] == 7.0 and stack[2, -1] != 7.0
    column = torch.randn(lay.n_weights, 2, dtype=torch.float64)[:, 0]
    assert all(torch.equal(b, u) for b, u in zip(flat_blocks(column, lay), unpack(column, lay)))
    leaf = theta.clone().requires_grad_(True)
    sum(b.sum() for b in flat_blocks(leaf, lay)).backward()
    assert torch.equal(leaf.grad, torch.ones_like(leaf))


def test_weight_views_write_into_adjacency():
    dims = (3, 4, 2)
    net = DeepLinearNetwork(dims)
    with torch.no_grad():
        net.weights[1][1, 2] = 7.0
        net.weight(1)[3, 0] = -2.0
    o = net.layout.offsets
    assert net.A[o[2] + 1, o[1] + 2] == 7.0
    assert net.A[o[1] + 3, o[0] + 0] == -2.0
    assert torch.count_nonzero(net.A) == 2
    # to_weights returns copies
    copies = net.to_weights()
    copies[0].fill_(1.0)
    assert torch.count_nonzero(net.A) == 2


@pytest.mark.parametrize("dims", DIMS)
def test_from_weights_to_weights_round_trip(dims):
    ws = random_weights(dims, seed=4)
    net = DeepLinearNetwork.from_weights(ws)
    assert net.A.dtype == torch.float64 and net.dims == tuple(dims)
    for w, v in zip(ws, net.to_weights()):
        assert torch.equal(w, v)
    theta = net.theta()
    assert torch.equal(theta, pack(ws))
    net2 = DeepLinearNetwork.from_theta(dims, theta)
    assert torch.equal(net2.A, net.A)
    net3 = DeepLinearNetwork(dims)
    net3.load_theta(theta)
    assert torch.equal(net3.A, net.A)
    assert torch.equal(adjacency_from_weights(ws), net.A.detach())


@pytest.mark.parametrize("dims", DIMS)
def test_forward_equals_x_times_product_transpose(dims):
    ws = random_weights(dims, seed=5)
    net = DeepLinearNetwork.from_weights(ws)
    x = torch.randn(13, dims[0], dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(net(x), x @ explicit_product(ws).T, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        net(torch.zeros(2, dims[0] + 1, dtype=torch.float64))


def test_forward_gradient_reaches_only_the_mask():
    dims = (3, 4, 2)
    net = DeepLinearNetwork.from_weights(random_weights(dims, seed=7))
    x = torch.randn(5, 3, dtype=torch.float64)
    net(x).square().sum().backward()
    assert torch.count_nonzero(net.A.grad * ~net.mask()) == 0


def test_to_graph_edges():
    dims = (3, 4, 2)
    ws = random_weights(dims, seed=8)
    net = DeepLinearNetwork.from_weights(ws)
    g = net.to_graph()
    assert len(g["nodes"]) == 9
    assert [layer for _, layer, _ in g["nodes"]] == [0] * 3 + [1] * 4 + [2] * 2
    assert len(g["edges"]) == 3 * 4 + 4 * 2
    o = net.layout.offsets
    for src, tgt, w in g["edges"]:
        j = net.layout.layer_of_node(tgt)
        assert net.layout.layer_of_node(src) == j - 1
        assert w == float(ws[j - 1][tgt - o[j], src - o[j - 1]])
    with torch.no_grad():
        net.weight(1)[0, :] = 0.0  # remove the 3 edges into node 3
        net.weight(2)[1, 1] = 1e-9
    assert len(net.to_graph()["edges"]) == 20 - 3
    assert len(net.to_graph(tol=1e-6)["edges"]) == 20 - 4


@pytest.mark.parametrize("bad", [[5], [], [3, 0, 2], [3, -1, 2], [3, 2.5, 2], [3, "4", 2], [3, True, 2]])
def test_bad_dims_name_the_argument(bad):
    with bad_argument("dims", "width"):
        Layout(tuple(bad))
    with bad_argument("dims", "width"):
        DeepLinearNetwork(bad)


def test_integral_dims_are_accepted():
    import numpy as np

    net = DeepLinearNetwork([np.int64(3), 4, np.int32(2)])
    assert net.dims == (3, 4, 2) and all(type(d) is int for d in net.dims)


def test_theta_index_gathers_theta_from_a():
    from dlnlab.init import gaussian

    for dims in ([3, 2], [11, 6, 6, 6, 6, 4], [2, 5, 1, 3]):
        net = DeepLinearNetwork.from_weights(gaussian(dims, 0.3, seed=4))
        idx = net.layout.theta_index
        assert idx.shape == (net.layout.n_weights,)
        assert torch.equal(net.A.detach().reshape(-1)[idx], net.theta())
        mask = torch.zeros(net.layout.n_nodes**2, dtype=torch.bool)
        mask[idx] = True
        assert torch.equal(mask.view_as(net.A), net.mask())


def test_a_stack_of_small_products_equals_the_products_one_by_one():
    """network.matmul: numpy's stacked matmul for an ensemble's small products, torch's otherwise."""
    from dlnlab.network import matmul

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 6, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(5, 4, 3, generator=gen, dtype=torch.float64)
    got = matmul(a, b.mT.mT)  # strided views too
    for i in range(5):
        torch.testing.assert_close(got[i], a[i] @ b[i], rtol=1e-15, atol=1e-15)
    assert torch.equal(matmul(a[0], b[0]), a[0] @ b[0])  # one product: torch's own
    w = a.requires_grad_(True)
    assert matmul(w, b).grad_fn is not None  # autograd keeps torch's


def test_weights_that_do_not_fit_the_problem_are_refused_naming_the_layer_and_shapes():
    """problem.loss and every gradient entry point: torch's matmul error ("mat1 and mat2 shapes cannot be
    multiplied") named no layer, and a last layer of one row was broadcast against d_y = 2 rows: a loss
    and no error. Now one ArgumentError (a ValueError) before any product, naming the layer."""
    import re

    import numpy as np

    from dlnlab.problem import RegressionProblem

    prob = RegressionProblem.teacher([2, 1], 4, 2, 20, seed=1)  # d_x = 4, d_y = 2
    w1, w2, w3 = random_weights((4, 3, 3, 2))
    wrong = {
        "W_1 (weights[0]) has shape (3, 5), expected (3, 4): its columns take the data's d_x = 4": [
            torch.zeros(3, 5), w2, w3],
        "W_2 (weights[1]) has shape (3, 5), expected (3, 3): its columns take the 3 rows of W_1": [
            w1, torch.zeros(3, 5), w3],
        "W_3 (weights[2]) has shape (1, 3), expected (2, 3): its columns take the 3 rows of W_2, its rows give "
        "the data's d_y = 2": [w1, w2, torch.zeros(1, 3)],
        "W_2 (weights[1]) has shape (3,), expected (d_2, 3): its columns take the 3 rows of W_1": [
            w1, torch.zeros(3), w3],
        "no layers: give [W_1, ..., W_h], h >= 1": [],
    }  # fmt: skip
    index, sample_weights = torch.arange(5), torch.ones(20, dtype=torch.float64)
    entries = {
        "loss": lambda ws: prob.loss(ws),
        "loss_and_gradient": lambda ws: prob.loss_and_gradient(ws),
        "gradient": lambda ws: prob.gradient(ws),
        "minibatch_gradient": lambda ws: prob.minibatch_gradient(ws, index),
        "minibatch_loss_and_gradient": lambda ws: prob.minibatch_loss_and_gradient(ws, index),
        "weighted_gradient": lambda ws: prob.weighted_gradient(ws, sample_weights),
        "hvp": lambda ws: prob.hvp(ws, ws),
    }
    for message, weights in wrong.items():
        for entry in entries.values():
            with bad_argument("weights", match=f"^weights: {re.escape(message)}$"):
                entry(weights)
    # the same entries on weights that fit: the loss against numpy's, batched members included
    p = (w3 @ w2 @ w1).numpy()
    direct = 0.5 * np.sum((prob.Y.numpy() - p @ prob.X.numpy()) ** 2) / 20
    assert float(prob.loss([w1, w2, w3])) == pytest.approx(direct, rel=1e-12)
    stack = [w.expand(3, *w.shape) for w in (w1, w2, w3)]
    assert prob.loss(stack).tolist() == pytest.approx([direct] * 3, rel=1e-12)


def test_dims_that_do_not_fit_the_problem_are_refused_by_the_flows_gradient():
    """gradient_theta (the flow's right-hand side) takes theta and dims: one theta through torch, a stack
    through numpy, whose matmul error named no layer either."""
    from dlnlab.problem import RegressionProblem

    prob = RegressionProblem.teacher([2, 1], 4, 2, 20, seed=1)
    for theta in (torch.zeros(5 * 3 + 3 * 2), torch.zeros(2, 5 * 3 + 3 * 2)):
        with bad_argument("dims", match=r"^dims \[5, 3, 2\] do not fit the data \(d_x = 4, d_y = 2\)$"):
            prob.gradient_theta(theta, [5, 3, 2])
    assert prob.gradient_theta(torch.zeros(2, 4 * 3 + 3 * 2), [4, 3, 2]).shape == (2, 18)
