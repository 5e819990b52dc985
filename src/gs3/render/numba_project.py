"""Compiled projection + SH colour of the numba backend, forward and analytic backward, for one camera.

The same formulas as `projection.project_gaussians` and `sh.sh_to_color` (gsplat 1.5.3's `persp_proj`,
eps2d 0.3, near 0.01, 1.3× field-of-view clamp of x/z and y/z in J, culling; colour = SH(dir) + 0.5 clamped
at 0, dir = mean − camera centre), written per Gaussian so that forward and backward are single loops
instead of a few dozen (C, N, 3, 3) tensor operations (forward and backward for 153,600 Gaussians × 2
cameras: ~1 s in torch autograd, ~50 ms of one core here). float64 throughout. Output rows use
`numba_composite`'s layout (mean_x, mean_y, conic_a, conic_b, conic_c, opacity, red, green, blue, depth).
"""

from __future__ import annotations

import math

from numba import njit

from gs3.render.numba_composite import pixel_box
from gs3.render.sh import SH_C0, SH_C1, SH_C2, SH_C3

EPS2D = 0.3
NEAR_PLANE = 0.01
ALPHA_MIN = 1.0 / 255.0
MAX_EXTEND = 3.33

C2_0, C2_1, C2_2, C2_3, C2_4 = SH_C2
C3_0, C3_1, C3_2, C3_3, C3_4, C3_5, C3_6 = SH_C3

_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_OPTIONS)
def _rotation(qw, qx, qy, qz):
    """Rotation matrix (row-major 9-tuple) of a unit wxyz quaternion, as `container.quat_to_rotmat`."""
    return (
        1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy),
        2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx),
        2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy),
    )  # fmt: skip


@njit(**_OPTIONS)
def _sh_basis(x, y, z, num_coeffs):
    """The 16 real SH basis values (3DGS constants and signs, as `sh.sh_basis`) at the unit direction
    (x, y, z); entries beyond `num_coeffs` are 0."""
    if num_coeffs == 1:
        return (SH_C0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    xx, yy, zz = x * x, y * y, z * z
    deg2 = 1.0 if num_coeffs > 4 else 0.0
    deg3 = 1.0 if num_coeffs > 9 else 0.0
    return (
        SH_C0, -SH_C1 * y, SH_C1 * z, -SH_C1 * x,
        deg2 * C2_0 * x * y, deg2 * C2_1 * y * z, deg2 * C2_2 * (2 * zz - xx - yy), deg2 * C2_3 * x * z,
        deg2 * C2_4 * (xx - yy),
        deg3 * C3_0 * y * (3 * xx - yy), deg3 * C3_1 * x * y * z, deg3 * C3_2 * y * (4 * zz - xx - yy),
        deg3 * C3_3 * z * (2 * zz - 3 * xx - 3 * yy), deg3 * C3_4 * x * (4 * zz - xx - yy),
        deg3 * C3_5 * z * (xx - yy), deg3 * C3_6 * x * (xx - 3 * yy),
    )  # fmt: skip


@njit(**_OPTIONS)
def _sh_basis_grad(x, y, z, num_coeffs):
    """∂basis_k/∂x, ∂/∂y, ∂/∂z at (x, y, z) treating the three as independent (three 16-tuples)."""
    xx, yy, zz = x * x, y * y, z * z
    deg2 = 1.0 if num_coeffs > 4 else 0.0
    deg3 = 1.0 if num_coeffs > 9 else 0.0
    d_x = (
        0.0, 0.0, 0.0, -SH_C1,
        deg2 * C2_0 * y, 0.0, deg2 * -2 * C2_2 * x, deg2 * C2_3 * z, deg2 * 2 * C2_4 * x,
        deg3 * C3_0 * 6 * x * y, deg3 * C3_1 * y * z, deg3 * C3_2 * -2 * x * y, deg3 * C3_3 * -6 * x * z,
        deg3 * C3_4 * (4 * zz - 3 * xx - yy), deg3 * C3_5 * 2 * x * z, deg3 * C3_6 * (3 * xx - 3 * yy),
    )  # fmt: skip
    d_y = (
        0.0, -SH_C1, 0.0, 0.0,
        deg2 * C2_0 * x, deg2 * C2_1 * z, deg2 * -2 * C2_2 * y, 0.0, deg2 * -2 * C2_4 * y,
        deg3 * C3_0 * (3 * xx - 3 * yy), deg3 * C3_1 * x * z, deg3 * C3_2 * (4 * zz - xx - 3 * yy),
        deg3 * C3_3 * -6 * y * z, deg3 * C3_4 * -2 * x * y, deg3 * C3_5 * -2 * y * z,
        deg3 * C3_6 * -6 * x * y,
    )  # fmt: skip
    d_z = (
        0.0, 0.0, SH_C1, 0.0,
        0.0, deg2 * C2_1 * y, deg2 * 4 * C2_2 * z, deg2 * C2_3 * x, 0.0,
        0.0, deg3 * C3_1 * x * y, deg3 * C3_2 * 8 * y * z, deg3 * C3_3 * (6 * zz - 3 * xx - 3 * yy),
        deg3 * C3_4 * 8 * x * z, deg3 * C3_5 * (xx - yy), 0.0,
    )  # fmt: skip
    return d_x, d_y, d_z


@njit(**_OPTIONS)
def _camera_limits(intrinsics, width, height):
    """x/z and y/z limits of J: 1.3× the half field of view (lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg)."""
    fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    return (
        (width - cx) / fx + 0.3 * tan_fovx,
        cx / fx + 0.3 * tan_fovx,
        (height - cy) / fy + 0.3 * tan_fovy,
        cy / fy + 0.3 * tan_fovy,
    )


@njit(**_OPTIONS)
def _geometry(i, means, scales, quats, view, intrinsics, limits):
    """Shared by forward and backward: camera-space mean, the unit quaternion and its norm, M = W R S
    (camera-space covariance = M Mᵀ) and its entries, and the Jacobian entries (j00, j02, j11, j12)."""
    m0, m1, m2 = means[i, 0], means[i, 1], means[i, 2]
    x = view[0, 0] * m0 + view[0, 1] * m1 + view[0, 2] * m2 + view[0, 3]
    y = view[1, 0] * m0 + view[1, 1] * m1 + view[1, 2] * m2 + view[1, 3]
    z = view[2, 0] * m0 + view[2, 1] * m1 + view[2, 2] * m2 + view[2, 3]
    q0, q1, q2, q3 = quats[i, 0], quats[i, 1], quats[i, 2], quats[i, 3]
    qnorm = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3)
    quat = (q0 / qnorm, q1 / qnorm, q2 / qnorm, q3 / qnorm)
    rot = _rotation(quat[0], quat[1], quat[2], quat[3])
    s0, s1, s2 = scales[i, 0], scales[i, 1], scales[i, 2]
    m = (
        (view[0, 0] * rot[0] + view[0, 1] * rot[3] + view[0, 2] * rot[6]) * s0,
        (view[0, 0] * rot[1] + view[0, 1] * rot[4] + view[0, 2] * rot[7]) * s1,
        (view[0, 0] * rot[2] + view[0, 1] * rot[5] + view[0, 2] * rot[8]) * s2,
        (view[1, 0] * rot[0] + view[1, 1] * rot[3] + view[1, 2] * rot[6]) * s0,
        (view[1, 0] * rot[1] + view[1, 1] * rot[4] + view[1, 2] * rot[7]) * s1,
        (view[1, 0] * rot[2] + view[1, 1] * rot[5] + view[1, 2] * rot[8]) * s2,
        (view[2, 0] * rot[0] + view[2, 1] * rot[3] + view[2, 2] * rot[6]) * s0,
        (view[2, 0] * rot[1] + view[2, 1] * rot[4] + view[2, 2] * rot[7]) * s1,
        (view[2, 0] * rot[2] + view[2, 1] * rot[5] + view[2, 2] * rot[8]) * s2,
    )
    fx, fy = intrinsics[0], intrinsics[1]
    lim_xp, lim_xn, lim_yp, lim_yn = limits
    rz = 1.0 / z
    tx = z * min(lim_xp, max(-lim_xn, x * rz))
    ty = z * min(lim_yp, max(-lim_yn, y * rz))
    jac = (fx * rz, -fx * tx * rz * rz, fy * rz, -fy * ty * rz * rz)
    return x, y, z, tx, ty, quat, qnorm, rot, m, jac


@njit(**_OPTIONS)
def _cov_cam(m):
    """M Mᵀ (exactly symmetric) as (c00, c01, c02, c11, c12, c22)."""
    return (
        m[0] * m[0] + m[1] * m[1] + m[2] * m[2],
        m[0] * m[3] + m[1] * m[4] + m[2] * m[5],
        m[0] * m[6] + m[1] * m[7] + m[2] * m[8],
        m[3] * m[3] + m[4] * m[4] + m[5] * m[5],
        m[3] * m[6] + m[4] * m[7] + m[5] * m[8],
        m[6] * m[6] + m[7] * m[7] + m[8] * m[8],
    )


@njit(**_OPTIONS)
def _cov2d(jac, c):
    """J Σc Jᵀ for J = [[j00, 0, j02], [0, j11, j12]]: (a00, a01, a11), no blur."""
    j00, j02, j11, j12 = jac
    c00, c01, c02, c11, c12, c22 = c
    return (
        j00 * (j00 * c00 + j02 * c02) + j02 * (j00 * c02 + j02 * c22),
        j11 * (j00 * c01 + j02 * c12) + j12 * (j00 * c02 + j02 * c22),
        j11 * (j11 * c11 + j12 * c12) + j12 * (j11 * c12 + j12 * c22),
    )


@njit(**_OPTIONS)
def project_forward(
    first,
    last,
    means,
    scales,
    quats,
    opacities,
    sh,
    view,
    intrinsics,
    center,
    width,
    height,
    params,
    boxes,
    visible,
):
    """Gaussians [first, last): writes `params` (N, 10) rows, `boxes` (N, 4) their pixel boxes
    (`numba_composite.pixel_box`) and `visible` (N,) bool (the torch backend's culling: z ≥ 0.01, det > 0,
    opacity ≥ 1/255, bounding box of ceil(extend·σ) pixels on screen, finite); rows of culled Gaussians are
    left alone. `view` is world_to_cam (4, 4), `intrinsics` (fx, fy, cx, cy), `center` the camera centre."""
    num_coeffs = sh.shape[1]
    fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
    limits = _camera_limits(intrinsics, width, height)
    for i in range(first, last):
        x, y, z, _, _, _, _, _, m, jac = _geometry(i, means, scales, quats, view, intrinsics, limits)
        opacity = opacities[i]
        if not (z >= NEAR_PLANE and opacity >= ALPHA_MIN):
            continue
        a00, a01, a11 = _cov2d(jac, _cov_cam(m))
        sxx, sxy, syy = a00 + EPS2D, a01, a11 + EPS2D
        det = sxx * syy - sxy * sxy
        if not det > 0:
            continue
        mx, my = fx * x / z + cx, fy * y / z + cy
        extend = min(math.sqrt(2.0 * math.log(max(opacity / ALPHA_MIN, 1.0))), MAX_EXTEND)
        radius_x = math.ceil(extend * math.sqrt(sxx))
        radius_y = math.ceil(extend * math.sqrt(syy))
        if not (mx + radius_x > 0 and mx - radius_x < width and my + radius_y > 0 and my - radius_y < height):
            continue
        if num_coeffs > 1:
            dx, dy, dz = means[i, 0] - center[0], means[i, 1] - center[1], means[i, 2] - center[2]
            norm = math.sqrt(dx * dx + dy * dy + dz * dz)
            basis = _sh_basis(dx / norm, dy / norm, dz / norm, num_coeffs)
        else:  # degree 0: the direction plays no part (and may be zero)
            basis = _sh_basis(0.0, 0.0, 0.0, 1)
        row = params[i]
        for ch in range(3):
            value = 0.5
            for k in range(num_coeffs):
                value += basis[k] * sh[i, k, ch]
            row[6 + ch] = max(value, 0.0)
        row[0], row[1] = mx, my
        row[2], row[3], row[4] = syy / det, -sxy / det, sxx / det
        row[5], row[9] = opacity, z
        boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3] = pixel_box(
            mx, my, opacity, sxx, syy, width, height
        )
        finite = True
        for f in range(10):
            finite = finite and math.isfinite(row[f])
        visible[i] = finite


@njit(**_OPTIONS)
def _grad_rs_column(col, gs, m, view):
    """Column `col` of ∂L/∂(R S) = Wᵀ (Gc + Gcᵀ) M, with gs = Gc + Gcᵀ and M = W R S row-major."""
    gm0 = gs[0] * m[col] + gs[1] * m[3 + col] + gs[2] * m[6 + col]
    gm1 = gs[3] * m[col] + gs[4] * m[3 + col] + gs[5] * m[6 + col]
    gm2 = gs[6] * m[col] + gs[7] * m[3 + col] + gs[8] * m[6 + col]
    return (
        view[0, 0] * gm0 + view[1, 0] * gm1 + view[2, 0] * gm2,
        view[0, 1] * gm0 + view[1, 1] * gm1 + view[2, 1] * gm2,
        view[0, 2] * gm0 + view[1, 2] * gm1 + view[2, 2] * gm2,
    )


@njit(**_OPTIONS)
def _color_backward(i, ch, basis, num_coeffs, sh, grad, grad_sh):
    """Adds ∂L/∂sh[i, :, ch] and returns ∂L/∂SH(dir)[ch] (0 where the colour was clamped at 0)."""
    value = 0.5
    for k in range(num_coeffs):
        value += basis[k] * sh[i, k, ch]
    if value < 0.0:
        return 0.0
    for k in range(num_coeffs):
        grad_sh[i, k, ch] += basis[k] * grad
    return grad


@njit(**_OPTIONS)
def project_backward(
    first,
    last,
    gaussians,
    grad_params,
    means,
    scales,
    quats,
    sh,
    view,
    intrinsics,
    center,
    width,
    height,
    grads,
    grad_sh,
):
    """Adds the gradients w.r.t. the fields of Gaussians `gaussians[first:last]` (distinct, ascending)
    implied by their rows of `grad_params` (N, 10) into `grads` (N, 11) = (means 3, scales 3, quats 4,
    opacity) and `grad_sh` (N, K, 3). The forward is recomputed per Gaussian."""
    num_coeffs = sh.shape[1]
    fx, fy = intrinsics[0], intrinsics[1]
    limits = _camera_limits(intrinsics, width, height)
    lim_xp, lim_xn, lim_yp, lim_yn = limits
    for s in range(first, last):
        i = gaussians[s]
        g = grad_params[i]
        x, y, z, tx, ty, quat, qnorm, rot, m, jac = _geometry(
            i, means, scales, quats, view, intrinsics, limits
        )
        j00, j02, j11, j12 = jac
        c = _cov_cam(m)
        c00, c01, c02, c11, c12, c22 = c
        a00, a01, a11 = _cov2d(jac, c)
        sxx, sxy, syy = a00 + EPS2D, a01, a11 + EPS2D
        det = sxx * syy - sxy * sxy

        # conic = (syy, −sxy, sxx) / det  →  2D covariance G = [[g00, g01], [g01, g11]] (sxy = ½(a01 + a10))
        g_det = -(g[2] * syy - g[3] * sxy + g[4] * sxx) / (det * det)
        g00 = g[4] / det + g_det * syy
        g11 = g[2] / det + g_det * sxx
        g01 = 0.5 * (-g[3] / det - 2.0 * g_det * sxy)
        # a = J Σc Jᵀ  →  ∂L/∂Σc = Jᵀ G J,  ∂L/∂J = 2 G J Σc (G, Σc symmetric)
        h00, h02 = g00 * j00, g00 * j02 + g01 * j12  # rows of G J (h01 = g01 j11, h10 = g01 j00)
        h11, h12 = g11 * j11, g01 * j02 + g11 * j12
        h01, h10 = g01 * j11, g01 * j00
        gc00, gc01, gc02 = j00 * h00, j00 * h01, j00 * h02
        gc11, gc12, gc22 = j11 * h11, j11 * h12, j02 * h02 + j12 * h12
        gc10, gc20, gc21 = j11 * h10, j02 * h00 + j12 * h10, j02 * h01 + j12 * h11
        jc00, jc02 = j00 * c00 + j02 * c02, j00 * c02 + j02 * c22  # rows of J Σc
        jc10, jc11, jc12 = j11 * c01 + j12 * c02, j11 * c11 + j12 * c12, j11 * c12 + j12 * c22
        jc01 = j00 * c01 + j02 * c12
        gj00 = 2.0 * (g00 * jc00 + g01 * jc10)
        gj02 = 2.0 * (g00 * jc02 + g01 * jc12)
        gj11 = 2.0 * (g01 * jc01 + g11 * jc11)
        gj12 = 2.0 * (g01 * jc02 + g11 * jc12)
        # J(x, y, z) with tx = z·clamp(x/z) (tx = x inside the limits, else ∝ z), mean2d, depth
        rz = 1.0 / z
        g_x = g[0] * fx * rz
        g_y = g[1] * fy * rz
        g_z = -(g[0] * fx * x + g[1] * fy * y) * rz * rz + g[9]
        g_z += -(gj00 * fx + gj11 * fy) * rz * rz + 2.0 * (gj02 * fx * tx + gj12 * fy * ty) * rz * rz * rz
        g_tx, g_ty = -gj02 * fx * rz * rz, -gj12 * fy * rz * rz
        if -lim_xn <= x * rz <= lim_xp:
            g_x += g_tx
        else:
            g_z += g_tx * tx * rz
        if -lim_yn <= y * rz <= lim_yp:
            g_y += g_ty
        else:
            g_z += g_ty * ty * rz
        # p = W μ + t;  Σc = M Mᵀ with M = W R S  →  ∂L/∂M = (Gc + Gcᵀ) M,  ∂L/∂(R S) = Wᵀ ∂L/∂M
        for r in range(3):
            grads[i, r] += view[0, r] * g_x + view[1, r] * g_y + view[2, r] * g_z
        gs = (
            gc00 + gc00, gc01 + gc10, gc02 + gc20,
            gc10 + gc01, gc11 + gc11, gc12 + gc21,
            gc20 + gc02, gc21 + gc12, gc22 + gc22,
        )  # fmt: skip
        s0, s1, s2 = scales[i, 0], scales[i, 1], scales[i, 2]
        a0, b0, c0 = _grad_rs_column(0, gs, m, view)
        a1, b1, c1 = _grad_rs_column(1, gs, m, view)
        a2, b2, c2 = _grad_rs_column(2, gs, m, view)
        grads[i, 3] += a0 * rot[0] + b0 * rot[3] + c0 * rot[6]
        grads[i, 4] += a1 * rot[1] + b1 * rot[4] + c1 * rot[7]
        grads[i, 5] += a2 * rot[2] + b2 * rot[5] + c2 * rot[8]
        g_rot = (a0 * s0, a1 * s1, a2 * s2, b0 * s0, b1 * s1, b2 * s2, c0 * s0, c1 * s1, c2 * s2)
        # R(q̂) → q̂ → q (normalisation)
        qw, qx, qy, qz = quat
        g_qw = 2 * (
            -g_rot[1] * qz + g_rot[2] * qy + g_rot[3] * qz - g_rot[5] * qx - g_rot[6] * qy + g_rot[7] * qx
        )
        g_qx = 2 * (g_rot[1] * qy + g_rot[2] * qz + g_rot[3] * qy - 2 * g_rot[4] * qx - g_rot[5] * qw)
        g_qx += 2 * (g_rot[6] * qz + g_rot[7] * qw - 2 * g_rot[8] * qx)
        g_qy = 2 * (-2 * g_rot[0] * qy + g_rot[1] * qx + g_rot[2] * qw + g_rot[3] * qx + g_rot[5] * qz)
        g_qy += 2 * (-g_rot[6] * qw + g_rot[7] * qz - 2 * g_rot[8] * qy)
        g_qz = 2 * (-2 * g_rot[0] * qz - g_rot[1] * qw + g_rot[2] * qx + g_rot[3] * qw - 2 * g_rot[4] * qz)
        g_qz += 2 * (g_rot[5] * qy + g_rot[6] * qx + g_rot[7] * qy)
        dot = qw * g_qw + qx * g_qx + qy * g_qy + qz * g_qz
        grads[i, 6] += (g_qw - qw * dot) / qnorm
        grads[i, 7] += (g_qx - qx * dot) / qnorm
        grads[i, 8] += (g_qy - qy * dot) / qnorm
        grads[i, 9] += (g_qz - qz * dot) / qnorm
        grads[i, 10] += g[5]
        # colour = max(SH(dir) + 0.5, 0): gradient where SH(dir) + 0.5 ≥ 0 (torch's clamp_min rule)
        ux = uy = uz = norm = 0.0
        if num_coeffs > 1:
            dx, dy, dz = means[i, 0] - center[0], means[i, 1] - center[1], means[i, 2] - center[2]
            norm = math.sqrt(dx * dx + dy * dy + dz * dz)
            ux, uy, uz = dx / norm, dy / norm, dz / norm
        basis = _sh_basis(ux, uy, uz, num_coeffs)
        g_r = _color_backward(i, 0, basis, num_coeffs, sh, g[6], grad_sh)
        g_g = _color_backward(i, 1, basis, num_coeffs, sh, g[7], grad_sh)
        g_b = _color_backward(i, 2, basis, num_coeffs, sh, g[8], grad_sh)
        if num_coeffs > 1:
            d_x, d_y, d_z = _sh_basis_grad(ux, uy, uz, num_coeffs)
            g_ux = g_uy = g_uz = 0.0
            for k in range(1, num_coeffs):
                weight = g_r * sh[i, k, 0] + g_g * sh[i, k, 1] + g_b * sh[i, k, 2]
                g_ux += weight * d_x[k]
                g_uy += weight * d_y[k]
                g_uz += weight * d_z[k]
            radial = g_ux * ux + g_uy * uy + g_uz * uz
            grads[i, 0] += (g_ux - ux * radial) / norm
            grads[i, 1] += (g_uy - uy * radial) / norm
            grads[i, 2] += (g_uz - uz * radial) / norm
