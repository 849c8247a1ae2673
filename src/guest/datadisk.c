/* SPDX-License-Identifier: Apache-2.0 */
/* Data disks: the host attaches each of the VM's confidential data disks as a virtio-blk device
 * whose serial is the disk's registry name. The guest lists the candidates here (every virtio
 * disk but the OS disk and the temp disk) and picks the device-mapper name each one gets. The
 * host picks the serials, so a serial becomes a name only when it is a safe one; the unlock
 * itself (main.c) trusts nothing but the disk's own LUKS2 header and the released key. */
#include <opencvm/guest.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

/* Names the guest's device mapper already uses (the root, the temp disk, its control node). */
static bool reserved(const char *s)
{
	return strcmp(s, "root") == 0 || strcmp(s, "temp") == 0 || strcmp(s, "control") == 0;
}

bool cvm_guest_data_disk_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n >= 1 && n <= CVM_GUEST_DATA_NAME_MAX && strspn(s, NAME_CHARS) == n && !reserved(s);
}

/* Whether device dev (a /sys/block entry, "vdb") is the OS disk or holds it (os_name "vda" or a
 * partition of it, "vda2"). */
static bool is_os(const char *dev, const char *os_name)
{
	size_t n = strlen(dev);
	if (!os_name || strncmp(os_name, dev, n) != 0)
		return false;
	const char *rest = os_name + n;
	if (!*rest)
		return true;
	if (*rest == 'p')
		rest++;
	return *rest && strspn(rest, "0123456789") == strlen(rest);
}

static bool name_taken(const struct cvm_guest_data_disk *d, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(d[i].name, name) == 0)
			return true;
	return false;
}

static int by_dev(const void *a, const void *b)
{
	const struct cvm_guest_data_disk *x = a, *y = b;
	size_t lx = strlen(x->dev), ly = strlen(y->dev); /* vdz before vdaa */
	return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x->dev, y->dev);
}

/* The serial of /sys/block/<dev> ("" when it has none). */
static void read_serial(const char *sys_block, const char *dev, char *out, size_t cap)
{
	char path[512];
	out[0] = 0;
	snprintf(path, sizeof(path), "%s/%s/serial", sys_block, dev);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, out, cap - 1);
	close(fd);
	out[n > 0 ? n : 0] = 0;
	out[strcspn(out, "\n")] = 0;
}

int cvm_guest_find_data_disks(const char *sys_block, const char *os_dev,
			      struct cvm_guest_data_disk *out, size_t cap, size_t *n,
			      struct cvm_err *err)
{
	*n = 0;
	const char *os_name = os_dev ? strrchr(os_dev, '/') : NULL;
	os_name = os_name ? os_name + 1 : os_dev;
	DIR *d = opendir(sys_block);
	if (!d)
		return cvm_err_set(err, errno, "DataDisk", "%s: %s", sys_block, strerror(errno));
	int r = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "vd", 2) != 0 || is_os(e->d_name, os_name))
			continue;
		struct cvm_guest_data_disk dd = { 0 };
		if (strlen(e->d_name) >= sizeof(dd.dev)) {
			r = cvm_err_badparam(err, "device name %s too long", e->d_name);
			break;
		}
		strcpy(dd.dev, e->d_name);
		read_serial(sys_block, e->d_name, dd.serial, sizeof(dd.serial));
		if (strcmp(dd.serial, "temp") == 0)
			continue;
		if (*n == cap) {
			r = cvm_err_set(err, E2BIG, "DataDisk", "more than %zu data disks", cap);
			break;
		}
		out[(*n)++] = dd;
	}
	closedir(d);
	if (r < 0)
		return r;
	/* Names in device order: the serial when it is a safe name no earlier disk has, then
	 * dataN (the lowest free N from the disk's position) for the others. */
	qsort(out, *n, sizeof(*out), by_dev);
	for (size_t i = 0; i < *n; i++)
		if (cvm_guest_data_disk_name_valid(out[i].serial) && !name_taken(out, i, out[i].serial))
			strcpy(out[i].name, out[i].serial);
	for (size_t i = 0; i < *n; i++)
		for (size_t k = i + 1; !out[i].name[0]; k++) {
			char cand[sizeof(out[i].name)];
			snprintf(cand, sizeof(cand), "data%zu", k);
			if (!name_taken(out, *n, cand))
				strcpy(out[i].name, cand);
		}
	return 0;
}
