"""The seed notebook (shared/reference/seed_notebook.txt) as a script, code unchanged.

``python benchmarks/seed_script.py`` prints the seed's trajectory; the benchmark
imports ``solve_outer`` from here to time the eager loop.
"""

import jax.numpy as jnp
import optax
from jax import grad, jacobian, jvp
from jax.scipy.sparse.linalg import cg as conjugate_gradient


def inner_objective(w, theta):
    return (w - theta**2) ** 2


def outer_objective(w_opt):
    return 2 * w_opt


grad_outer = grad(outer_objective)
grad_inner = grad(inner_objective)


def solve_inner(theta, w_init):
    optimizer = optax.adam(learning_rate=1e-2)
    opt_state = optimizer.init(w_init)
    w = w_init
    for _ in range(50):
        grad_w = grad_inner(w, theta)
        updates, opt_state = optimizer.update(grad_w, opt_state, w)
        w = optax.apply_updates(w, updates)
    return w


def solve_outer(theta_init, n_steps=500, step_size=1e-3, learning_rate=1e-2, verbose=True):
    theta = theta_init
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(theta)
    w_init = 1.0

    for i in range(n_steps):
        w_star = solve_inner(theta, w_init)
        w_init = w_star

        v = grad_outer(w_star)
        B = jacobian(grad_inner, argnums=1)(w_star, theta)

        def matvec_A(u, w_star=w_star, theta=theta):
            return -jvp(lambda w: grad_inner(w, theta), (w_star,), (u,))[1]

        u = conjugate_gradient(matvec_A, v.T)[0]
        grad_theta = jnp.dot(u.T, B)

        if verbose:
            print(f"Iteration {i} of {n_steps} theta: {theta}, grad theta: {grad_theta}")
        updates, opt_state = optimizer.update(grad_theta, opt_state)
        theta = optax.apply_updates(theta, updates)

    return theta


if __name__ == "__main__":
    print(repr(solve_outer(jnp.array(1.0), n_steps=100, learning_rate=8e-2)))
