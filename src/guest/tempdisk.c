/* SPDX-License-Identifier: Apache-2.0 */
/* The temp disk: the host attaches it as the virtio-blk device with serial "temp", a fresh
 * sparse file each boot. The guest encrypts it with a key that exists only in its memory for
 * this boot, so nothing written there survives the boot or is readable by the host. The host
 * picks the serial, so the guest trusts the label only for a device that is not the OS disk and
 * is blank: it never formats anything that holds data. */
#include <opencvm/guest.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int cvm_guest_find_temp_disk(const char *sys_block, char *name, size_t cap, struct cvm_err *err)
{
	DIR *d = opendir(sys_block);
	if (!d)
		return cvm_err_set(err, errno, "TempDisk", "%s: %s", sys_block, strerror(errno));
	int r = -ENOENT;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "vd", 2) != 0)
			continue;
		char path[512], serial[64] = "";
		snprintf(path, sizeof(path), "%s/%s/serial", sys_block, e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, serial, sizeof(serial) - 1);
		close(fd);
		if (n <= 0)
			continue;
		serial[n] = 0;
		serial[strcspn(serial, "\n")] = 0;
		if (strcmp(serial, "temp") != 0)
			continue;
		if (r == 0) {
			r = cvm_err_set(err, EEXIST, "TempDisk", "two devices carry the serial temp "
								 "(%s and %s)", name, e->d_name);
			break;
		}
		if (strlen(e->d_name) >= cap) {
			r = cvm_err_badparam(err, "device name %s too long", e->d_name);
			break;
		}
		strcpy(name, e->d_name);
		r = 0;
	}
	closedir(d);
	return r;
}

int cvm_guest_temp_disk_check(const char *dev, const char *os_dev, struct cvm_err *err)
{
	struct stat a, b;
	if (stat(dev, &a) < 0)
		return cvm_err_set(err, errno, "TempDisk", "%s: %s", dev, strerror(errno));
	if (!S_ISBLK(a.st_mode))
		return cvm_err_badparam(err, "%s: not a block device", dev);
	if (os_dev && stat(os_dev, &b) == 0 && major(a.st_rdev) == major(b.st_rdev) &&
	    minor(a.st_rdev) / 16 == minor(b.st_rdev) / 16)
		return cvm_err_set(err, EPERM, "TempDisk", "%s is the OS disk %s: refused", dev,
				   os_dev);
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cvm_err_set(err, errno, "TempDisk", "%s: %s", dev, strerror(errno));
	/* Blank: the first MiB (partition tables, LUKS and filesystem superblocks) is zero. */
	static const size_t len = 1u << 20;
	uint8_t *buf = malloc(len);
	ssize_t n = buf ? pread(fd, buf, len, 0) : -1;
	close(fd);
	int r = 0;
	if (!buf)
		r = cvm_err_nomem(err);
	else if (n <= 0)
		r = cvm_err_set(err, EIO, "TempDisk", "%s: cannot read", dev);
	for (ssize_t i = 0; r == 0 && i < n; i++)
		if (buf[i])
			r = cvm_err_set(err, EEXIST, "TempDisk", "%s is not blank (byte %zd): a temp "
								 "disk is fresh each boot; refusing to "
								 "format it", dev, i);
	free(buf);
	return r;
}
