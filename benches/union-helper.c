/*
 * union-helper: data generator and timed operations for benches/union.sh.
 *
 * Build: cc -O2 -o union-helper union-helper.c   (union.sh does this itself)
 *
 * Every timed subcommand prints one line on stdout:
 *     <elapsed-ns> <check...>
 * <elapsed-ns> covers only the operation (CLOCK_MONOTONIC around it); the
 * check fields are computed without extra syscalls inside the timed region
 * (or after it) and must be identical across filesystems for the same case,
 * which union.sh verifies.
 *
 *   gen DIR                 generate the layer sets into DIR (see gen())
 *   walk DIR                lstat every entry below DIR (like find -printf '%s %m')
 *   readall DIR             readdir tree, open+read every regular file
 *   seqread FILE            read FILE sequentially with 1 MiB reads
 *   append FILE             open(O_WRONLY|O_APPEND), write 16 bytes, close
 *   rwappend FILE           the same with O_RDWR (a data copy-up everywhere)
 *   chmod FILE              chmod(FILE, 0600)
 *   create DIR N SIZE       mkdir DIR, create N files of SIZE bytes each
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static void die(const char *fmt, ...)
{
	va_list ap;
	int e = errno;
	va_start(ap, fmt);
	fprintf(stderr, "union-helper: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (e)
		fprintf(stderr, ": %s", strerror(e));
	fputc('\n', stderr);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

/* ------------------------------------------------------------------ */
/* walk / readall                                                      */

struct stats {
	uint64_t entries, files, dirs, bytes;
	uint64_t digest; /* order independent: sum of per-entry hashes */
};

static char *rbuf;
#define RBUF (128 * 1024)

/* path hash is built incrementally: h(parent) then name */
static void walk_dir(int dfd, uint64_t ph, int readall, struct stats *s)
{
	DIR *d = fdopendir(dfd);
	if (!d)
		die("fdopendir");
	struct dirent *de;
	while ((errno = 0, de = readdir(d))) {
		const char *n = de->d_name;
		if (n[0] == '.' && (!n[1] || (n[1] == '.' && !n[2])))
			continue;
		uint64_t h = fnv(n, strlen(n), fnv("/", 1, ph));
		unsigned type = de->d_type;
		struct stat st;
		if (!readall || type == DT_UNKNOWN) {
			if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW))
				die("lstat %s", n);
			type = IFTODT(st.st_mode);
			if (!readall) {
				/* directory sizes are fs specific: leave them out */
				uint64_t sz = S_ISDIR(st.st_mode) ? 0 : (uint64_t)st.st_size;
				s->digest += mix(h ^ mix(((uint64_t)st.st_mode << 40) ^ sz));
				if (!S_ISDIR(st.st_mode))
					s->bytes += sz;
			}
		}
		s->entries++;
		if (type == DT_DIR) {
			s->dirs++;
			int fd = openat(dirfd(d), n, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0)
				die("open dir %s", n);
			walk_dir(fd, h, readall, s);
		} else if (type == DT_REG) {
			s->files++;
			if (!readall)
				continue;
			int fd = openat(dirfd(d), n, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0)
				die("open %s", n);
			ssize_t r;
			uint64_t first = 0, tot = 0;
			while ((r = read(fd, rbuf, RBUF)) > 0) {
				if (tot == 0 && r >= 8)
					memcpy(&first, rbuf, 8);
				tot += r;
			}
			if (r < 0)
				die("read %s", n);
			close(fd);
			s->bytes += tot;
			s->digest += mix(h ^ mix(first ^ tot));
		}
	}
	if (errno)
		die("readdir");
	closedir(d);
}

static int cmd_walk(const char *dir, int readall)
{
	struct stats s = {0};
	rbuf = malloc(RBUF);
	uint64_t t0 = now_ns();
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		die("open %s", dir);
	walk_dir(fd, 0xcbf29ce484222325ull, readall, &s);
	uint64_t t1 = now_ns();
	if (readall)
		printf("%llu files=%llu bytes=%llu digest=%016llx\n", (unsigned long long)(t1 - t0),
		       (unsigned long long)s.files, (unsigned long long)s.bytes,
		       (unsigned long long)s.digest);
	else
		printf("%llu entries=%llu dirs=%llu files=%llu bytes=%llu digest=%016llx\n",
		       (unsigned long long)(t1 - t0), (unsigned long long)s.entries,
		       (unsigned long long)s.dirs, (unsigned long long)s.files,
		       (unsigned long long)s.bytes, (unsigned long long)s.digest);
	return 0;
}

/* ------------------------------------------------------------------ */
/* single-file operations                                              */

static int cmd_seqread(const char *path)
{
	size_t bs = 1 << 20;
	char *buf = malloc(bs);
	uint64_t tot = 0, first = 0;
	uint64_t t0 = now_ns();
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open %s", path);
	ssize_t r;
	while ((r = read(fd, buf, bs)) > 0) {
		if (!tot && r >= 8)
			memcpy(&first, buf, 8);
		tot += r;
	}
	if (r < 0)
		die("read %s", path);
	close(fd);
	uint64_t t1 = now_ns();
	printf("%llu bytes=%llu first=%016llx\n", (unsigned long long)(t1 - t0),
	       (unsigned long long)tot, (unsigned long long)first);
	return 0;
}

static int cmd_append(const char *path, int access)
{
	static const char data[16] = "appended-bytes!\n";
	uint64_t t0 = now_ns();
	int fd = open(path, access | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		die("open %s", path);
	if (write(fd, data, sizeof data) != sizeof data)
		die("write %s", path);
	if (close(fd))
		die("close %s", path);
	uint64_t t1 = now_ns();
	struct stat st;
	if (stat(path, &st))
		die("stat %s", path);
	printf("%llu size=%llu\n", (unsigned long long)(t1 - t0), (unsigned long long)st.st_size);
	return 0;
}

static int cmd_chmod(const char *path)
{
	uint64_t t0 = now_ns();
	if (chmod(path, 0600))
		die("chmod %s", path);
	uint64_t t1 = now_ns();
	struct stat st;
	if (stat(path, &st))
		die("stat %s", path);
	printf("%llu mode=%o size=%llu\n", (unsigned long long)(t1 - t0), st.st_mode,
	       (unsigned long long)st.st_size);
	return 0;
}

static int cmd_create(const char *dir, long n, long size)
{
	char *buf = malloc(size + 1);
	memset(buf, 'x', size);
	char name[64];
	uint64_t t0 = now_ns();
	if (mkdir(dir, 0755))
		die("mkdir %s", dir);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		die("open %s", dir);
	for (long i = 0; i < n; i++) {
		snprintf(name, sizeof name, "f%06ld.txt", i);
		int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			die("create %s", name);
		if (write(fd, buf, size) != size)
			die("write %s", name);
		if (close(fd))
			die("close %s", name);
	}
	close(dfd);
	uint64_t t1 = now_ns();
	/* check (untimed): count the entries back */
	DIR *d = opendir(dir);
	long cnt = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			cnt++;
	closedir(d);
	printf("%llu created=%ld\n", (unsigned long long)(t1 - t0), cnt);
	return 0;
}

/* ------------------------------------------------------------------ */
/* generator                                                           */

/*
 * Final (merged) tree: NDIRS directories shaped like a random recursive tree
 * under distro-like top-level names, NFILES regular files (log-uniform size
 * classes, mostly small), NLINKS symlinks.  Extra objects exist only in lower
 * layers and are hidden in the merged view: NOVER older versions of final
 * files (overridden by a higher layer) and NDEL files plus NDELD directories
 * (NDELDF files each) that a higher layer whites out (char 0/0).
 *
 * Two layer sets share the same merged view:
 *   two/l0 (bottom), two/l1 (top)           + two/l0/opt/blob-256M.bin
 *   many/l00 (bottom) ... many/l63 (top)
 * Every directory exists in the bottom layer; higher layers re-create the
 * parent chain of each object they hold, as image layers do.
 */
#define NDIRS 2000
#define NFILES 18000
#define NLINKS 1000
#define NOVER 600
#define NDEL 400
#define NDELD 20
#define NDELDF 10
#define NMANY 64
#define BIGSIZE (256ull << 20)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng_state += 0x9e3779b97f4a7c15ull;
	return mix(rng_state);
}
static double urand(void) { return (rnd() >> 11) * (1.0 / 9007199254740992.0); }
static long irand(long lo, long hi) { return lo + (long)(rnd() % (uint64_t)(hi - lo + 1)); } /* inclusive */

struct gdir {
	int parent, depth;
	char *path; /* relative, "" for root */
	unsigned char made[2][NMANY];
};
static struct gdir dirs[NDIRS + 1];
static int ndirs;

static const char *syl[] = {"lib", "core", "net", "gtk", "py", "x", "perl", "ssl", "gl", "dbus",
			    "sys", "std", "util", "conf", "gnu", "io", "ui", "kde", "font", "ca",
			    "zlib", "pam", "sh", "udev", "mime", "term", "icu", "boot", "doc", "man"};
static const char *ext[] = {"", "", ".so", ".so.1", ".h", ".py", ".pyc", ".conf", ".txt", ".gz",
			    ".mo", ".png", ".svg", ".pm", ".html", ".json", ".list", ".1.gz"};
#define NSYL (sizeof syl / sizeof *syl)
#define NEXT (sizeof ext / sizeof *ext)

static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		die("oom");
	va_end(ap);
	return s;
}

static int add_dir(int parent, const char *name)
{
	struct gdir *d = &dirs[ndirs];
	d->parent = parent;
	d->depth = parent < 0 ? 0 : dirs[parent].depth + 1;
	d->path = parent <= 0 ? xasprintf("%s", name) : xasprintf("%s/%s", dirs[parent].path, name);
	return ndirs++;
}

static int find_dir(const char *path)
{
	for (int i = 0; i < ndirs; i++)
		if (!strcmp(dirs[i].path, path))
			return i;
	die("no dir %s", path);
	return -1;
}

static const char *gen_root;
static const char *layer_dir(int set, int layer)
{
	static char buf[4096];
	if (set == 0)
		snprintf(buf, sizeof buf, "%s/two/l%d", gen_root, layer);
	else
		snprintf(buf, sizeof buf, "%s/many/l%02d", gen_root, layer);
	return buf;
}

static void mkdir_ok(const char *p, mode_t m)
{
	if (mkdir(p, m) && errno != EEXIST)
		die("mkdir %s", p);
}

static void ensure_dir(int set, int layer, int di)
{
	if (dirs[di].made[set][layer])
		return;
	if (dirs[di].parent >= 0)
		ensure_dir(set, layer, dirs[di].parent);
	char *p = xasprintf("%s/%s", layer_dir(set, layer), dirs[di].path);
	mkdir_ok(p, 0755);
	free(p);
	dirs[di].made[set][layer] = 1;
}

static char *gbuf;
#define GBUF (4 << 20)

static void write_file(const char *path, uint64_t size, uint64_t seed, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		die("create %s", path);
	uint64_t st = mix(seed);
	uint64_t *w = (uint64_t *)gbuf;
	while (size) {
		size_t n = size < GBUF ? size : GBUF;
		for (size_t i = 0; i < (n + 7) / 8; i++) {
			st += 0x9e3779b97f4a7c15ull;
			w[i] = mix(st);
		}
		if (write(fd, gbuf, n) != (ssize_t)n)
			die("write %s", path);
		size -= n;
	}
	if (fchmod(fd, mode))
		die("fchmod %s", path);
	close(fd);
}

static uint64_t file_size(void)
{
	double u = urand(), lo, hi;
	if (u < 0.75)
		lo = 64, hi = 4096;
	else if (u < 0.967)
		lo = 4096, hi = 65536;
	else if (u < 0.998)
		lo = 65536, hi = 524288;
	else
		lo = 1 << 20, hi = 4 << 20;
	return (uint64_t)(lo * __builtin_exp(urand() * __builtin_log(hi / lo)));
}

/* layer choice for an object of the final tree */
static int final_layer(int set)
{
	if (set == 0)
		return urand() < 0.75 ? 0 : 1;
	return urand() < 0.3 ? 0 : (int)irand(1, NMANY - 1);
}

struct obj {
	int dir;
	char *name;
	uint64_t size;
	mode_t mode;
};

static void put_file(int set, int layer, int dir, const char *name, uint64_t size, uint64_t seed,
		     mode_t mode)
{
	ensure_dir(set, layer, dir);
	char *p = dirs[dir].path[0] ? xasprintf("%s/%s/%s", layer_dir(set, layer), dirs[dir].path, name)
				    : xasprintf("%s/%s", layer_dir(set, layer), name);
	write_file(p, size, seed, mode);
	free(p);
}

static void put_whiteout(int set, int layer, int dir, const char *name)
{
	ensure_dir(set, layer, dir);
	char *p = dirs[dir].path[0] ? xasprintf("%s/%s/%s", layer_dir(set, layer), dirs[dir].path, name)
				    : xasprintf("%s/%s", layer_dir(set, layer), name);
	if (mknod(p, S_IFCHR | 0, makedev(0, 0)))
		die("mknod whiteout %s", p);
	free(p);
}

static int cmd_gen(const char *root)
{
	gen_root = root;
	gbuf = malloc(GBUF + 8);
	mkdir_ok(root, 0755);
	char *p = xasprintf("%s/two", root);
	mkdir_ok(p, 0755);
	free(p);
	p = xasprintf("%s/many", root);
	mkdir_ok(p, 0755);
	free(p);
	for (int l = 0; l < 2; l++)
		mkdir_ok(layer_dir(0, l), 0755);
	for (int l = 0; l < NMANY; l++)
		mkdir_ok(layer_dir(1, l), 0755);

	/* directory skeleton */
	add_dir(-1, "");
	static const char *top[] = {"bin", "boot", "etc", "home", "lib", "lib64", "opt", "root",
				    "run", "sbin", "srv", "tmp", "usr", "var"};
	for (size_t i = 0; i < sizeof top / sizeof *top; i++)
		add_dir(0, top[i]);
	static const char *sub[][2] = {{"usr", "bin"},       {"usr", "include"}, {"usr", "lib"},
				       {"usr", "libexec"},   {"usr", "local"},   {"usr", "sbin"},
				       {"usr", "share"},     {"var", "cache"},   {"var", "lib"},
				       {"var", "log"},       {"usr/share", "doc"}, {"usr/share", "locale"},
				       {"usr/share", "man"}, {"usr/lib", "python3"}, {"etc", "ssl"}};
	for (size_t i = 0; i < sizeof sub / sizeof *sub; i++)
		add_dir(find_dir(sub[i][0]), sub[i][1]);
	int fixed = ndirs;
	while (ndirs < NDIRS) {
		int par;
		do
			par = (int)irand(1, ndirs - 1);
		while (dirs[par].depth >= 12);
		char name[64];
		snprintf(name, sizeof name, "%s%s-%d", syl[rnd() % NSYL], syl[rnd() % NSYL], ndirs);
		add_dir(par, name);
	}
	(void)fixed;
	for (int set = 0; set < 2; set++)
		for (int i = 0; i < ndirs; i++)
			ensure_dir(set, 0, i);

	/* final regular files, some with an older version lower down */
	uint64_t total = 0;
	for (int i = 0; i < NFILES; i++) {
		double u = urand();
		int dir = 1 + (int)((ndirs - 1) * u * u);
		char name[80];
		snprintf(name, sizeof name, "%s%s-%d%s", syl[rnd() % NSYL], syl[rnd() % NSYL], i,
			 ext[rnd() % NEXT]);
		uint64_t size = file_size();
		mode_t mode = urand() < 0.1 ? 0755 : 0644;
		int over = i % (NFILES / NOVER) == 7;
		for (int set = 0; set < 2; set++) {
			int L = final_layer(set);
			if (over) {
				L = set == 0 ? 1 : (int)irand(1, NMANY - 1);
				int lo = set == 0 ? 0 : (int)irand(0, L - 1);
				put_file(set, lo, dir, name, size / 2 + 100, (uint64_t)i * 4 + 1, 0644);
			}
			put_file(set, L, dir, name, size, (uint64_t)i * 4, mode);
		}
		total += size;
	}
	/* symlinks */
	for (int i = 0; i < NLINKS; i++) {
		double u = urand();
		int dir = 1 + (int)((ndirs - 1) * u * u);
		char name[80];
		snprintf(name, sizeof name, "%s-link-%d", syl[rnd() % NSYL], i);
		char *target = xasprintf("/%s/%s%s-%ld.so", dirs[irand(1, ndirs - 1)].path,
					 syl[rnd() % NSYL], syl[rnd() % NSYL], irand(0, NFILES));
		for (int set = 0; set < 2; set++) {
			int L = final_layer(set);
			ensure_dir(set, L, dir);
			char *p = xasprintf("%s/%s/%s", layer_dir(set, L), dirs[dir].path, name);
			if (symlink(target, p))
				die("symlink %s", p);
			free(p);
		}
		free(target);
	}
	/* deleted files: present low, whited out higher */
	for (int i = 0; i < NDEL; i++) {
		double u = urand();
		int dir = 1 + (int)((ndirs - 1) * u * u);
		char name[80];
		snprintf(name, sizeof name, "%s-old-%d%s", syl[rnd() % NSYL], i, ext[rnd() % NEXT]);
		uint64_t size = file_size();
		for (int set = 0; set < 2; set++) {
			int lo = set == 0 ? 0 : (int)irand(0, NMANY - 2);
			int hi = set == 0 ? 1 : (int)irand(lo + 1, NMANY - 1);
			put_file(set, lo, dir, name, size, (uint64_t)(NFILES + i) * 4, 0644);
			put_whiteout(set, hi, dir, name);
		}
	}
	/* deleted directories with content spread over the layers below the whiteout */
	for (int i = 0; i < NDELD; i++) {
		int par = (int)irand(1, ndirs - 1);
		char dname[64];
		snprintf(dname, sizeof dname, "gone-%d", i);
		int w[2] = {1, (int)irand(1, NMANY - 1)};
		int save = ndirs; /* temporary dir entry, not part of the final tree */
		int di = add_dir(par, dname);
		for (int set = 0; set < 2; set++) {
			for (int f = 0; f < NDELDF; f++) {
				int lo = set == 0 ? 0 : (int)irand(0, w[1] - 1);
				char name[64];
				snprintf(name, sizeof name, "stale-%d.txt", f);
				put_file(set, lo, di, name, file_size() % 65536,
					 (uint64_t)(NFILES + NDEL + i * NDELDF + f) * 4, 0644);
			}
			put_whiteout(set, w[set], par, dname);
		}
		free(dirs[di].path);
		memset(&dirs[di], 0, sizeof dirs[di]);
		ndirs = save;
	}
	/* the big file, bottom layer of the two-layer set */
	p = xasprintf("%s/opt/blob-256M.bin", layer_dir(0, 0));
	write_file(p, BIGSIZE, 0xb16, 0644);
	free(p);
	fprintf(stderr, "generated %d dirs, %d files (%.0f MB per set), %d symlinks, %d overridden, "
			"%d deleted files, %d deleted dirs\n",
		ndirs, NFILES, total / 1e6, NLINKS, NOVER, NDEL, NDELD);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: union-helper gen|walk|readall|seqread|append|rwappend|chmod|create ARGS");
	const char *c = argv[1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(c, "gen"))
		return cmd_gen(argv[2]);
	if (!strcmp(c, "walk"))
		return cmd_walk(argv[2], 0);
	if (!strcmp(c, "readall"))
		return cmd_walk(argv[2], 1);
	if (!strcmp(c, "seqread"))
		return cmd_seqread(argv[2]);
	if (!strcmp(c, "append"))
		return cmd_append(argv[2], O_WRONLY);
	if (!strcmp(c, "rwappend"))
		return cmd_append(argv[2], O_RDWR);
	if (!strcmp(c, "chmod"))
		return cmd_chmod(argv[2]);
	if (!strcmp(c, "create") && argc == 5)
		return cmd_create(argv[2], atol(argv[3]), atol(argv[4]));
	errno = 0;
	die("bad command %s", c);
	return 1;
}
