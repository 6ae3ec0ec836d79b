// SPDX-License-Identifier: GPL-2.0
/*
 * Out-of-line wrappers for the vhost core's static inlines and macros (see helpers.h).
 */

#include <linux/net.h>
#include <net/sock.h>

#include "vhost.h"

#include "helpers.h"

void *vnzc_vq_get_backend(struct vhost_virtqueue *vq)
{
	return vhost_vq_get_backend(vq);
}

void vnzc_vq_set_backend(struct vhost_virtqueue *vq, void *private_data)
{
	vhost_vq_set_backend(vq, private_data);
}

bool vnzc_vq_has_feature(struct vhost_virtqueue *vq, int bit)
{
	return vhost_has_feature(vq, bit);
}

bool vnzc_vq_backend_has_feature(struct vhost_virtqueue *vq, int bit)
{
	return vhost_backend_has_feature(vq, bit);
}

/* @features has VIRTIO_FEATURES_U64S words; the caller holds vq->mutex. */
void vnzc_vq_set_acked_features(struct vhost_virtqueue *vq, const u64 *features)
{
	virtio_features_copy(vq->acked_features_array, features);
}

/*
 * vq_err(): a guest's mistake is a debug line (dynamic debug, so a guest cannot flood the
 * host log) plus a signal on the virtqueue's error eventfd.
 */
void vnzc_vq_err(struct vhost_virtqueue *vq, const char *msg)
{
	vq_err(vq, "vhost_net_zc: %s\n", msg);
}

/* Fields of struct sock, which Rust sees only as an opaque type. */
int vnzc_sock_type(struct socket *sock)
{
	return sock->sk->sk_type;
}

int vnzc_sock_family(struct socket *sock)
{
	return sock->sk->sk_family;
}
