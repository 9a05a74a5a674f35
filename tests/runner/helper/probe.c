// A small static program the runner tests copy into their rootfs. It reports
// what it sees from inside a container, one "key=value" line per question, so
// that the tests need no tools of the host or the image.
//
//   probe CMD [ARGS...] [+ CMD [ARGS...]]...
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char* ErrnoName(int err) {
  switch (err) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR";
    case EAGAIN: return "EAGAIN";
    default: {
      static char buffer[32];
      snprintf(buffer, sizeof(buffer), "errno%d", err);
      return buffer;
    }
  }
}

static void SleepMs(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static int CompareStrings(const void* a, const void* b) {
  return strcmp(*(const char* const*)a, *(const char* const*)b);
}

static void ListDir(const char* key, const char* path, int numeric_only) {
  DIR* dir = opendir(path);
  if (dir == NULL) {
    printf("%s=%s\n", key, ErrnoName(errno));
    return;
  }
  char* names[4096];
  int count = 0;
  struct dirent* entry;
  while ((entry = readdir(dir)) != NULL && count < 4096) {
    if (entry->d_name[0] == '.') continue;
    if (numeric_only && (entry->d_name[0] < '0' || entry->d_name[0] > '9')) continue;
    names[count++] = strdup(entry->d_name);
  }
  closedir(dir);
  qsort(names, (size_t)count, sizeof(names[0]), CompareStrings);
  printf("%s=", key);
  for (int i = 0; i < count; ++i) {
    printf("%s%s", i ? "," : "", names[i]);
    free(names[i]);
  }
  printf("\n");
}

static void StatusField(const char* field) {
  FILE* f = fopen("/proc/self/status", "r");
  if (f == NULL) {
    printf("%s=%s\n", field, ErrnoName(errno));
    return;
  }
  char line[512];
  size_t length = strlen(field);
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, field, length) == 0 && line[length] == ':') {
      char* value = line + length + 1;
      while (*value == ' ' || *value == '\t') ++value;
      printf("%s=%s", field, value);
      break;
    }
  }
  fclose(f);
}

static char ProcessState(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE* f = fopen(path, "r");
  if (f == NULL) return '-';
  char buffer[512];
  size_t n = fread(buffer, 1, sizeof(buffer) - 1, f);
  fclose(f);
  buffer[n] = '\0';
  char* paren = strrchr(buffer, ')');
  return paren != NULL && paren[1] == ' ' ? paren[2] : '?';
}

// An orphan that exits: with a reaper as PID 1 it disappears, without one it
// stays a zombie child of whoever PID 1 is.
static void OrphanTest(void) {
  int report[2], hold[2];
  if (pipe(report) != 0 || pipe(hold) != 0) return;
  pid_t child = fork();
  if (child == 0) {
    close(report[0]);
    pid_t grandchild = fork();
    if (grandchild == 0) {
      // Waits until the test closed its end of `hold`, then exits.
      close(report[1]);
      close(hold[1]);
      char c;
      while (read(hold[0], &c, 1) > 0) {
      }
      _exit(0);
    }
    dprintf(report[1], "%d\n", (int)grandchild);
    _exit(0);
  }
  close(report[1]);
  close(hold[0]);
  waitpid(child, NULL, 0);
  char buffer[32] = {0};
  ssize_t n = read(report[0], buffer, sizeof(buffer) - 1);
  close(report[0]);
  close(hold[1]);  // the orphan exits now
  if (n <= 0) {
    printf("orphan=error\n");
    return;
  }
  pid_t grandchild = (pid_t)atoi(buffer);
  for (int i = 0; i < 300; ++i) {
    char state = ProcessState(grandchild);
    if (state == '-') {
      printf("orphan=reaped\n");
      return;
    }
    if (state == 'Z' && i > 20) {
      printf("orphan=zombie\n");
      return;
    }
    SleepMs(10);
  }
  printf("orphan=running\n");
}

static volatile sig_atomic_t g_signal = 0;
static void OnSignal(int sig) { g_signal = sig; }

static int RunOne(int argc, char** argv) {
  const char* cmd = argv[0];
  if (strcmp(cmd, "pid") == 0) {
    printf("pid=%d\n", (int)getpid());
  } else if (strcmp(cmd, "hostname") == 0) {
    char name[256] = {0};
    gethostname(name, sizeof(name) - 1);
    printf("hostname=%s\n", name);
  } else if (strcmp(cmd, "sethostname") == 0 && argc > 1) {
    int rc = sethostname(argv[1], strlen(argv[1]));
    printf("sethostname=%s\n", ErrnoName(rc == 0 ? 0 : errno));
  } else if (strcmp(cmd, "id") == 0) {
    gid_t groups[64];
    int n = getgroups(64, groups);
    printf("uid=%d gid=%d groups=", (int)getuid(), (int)getgid());
    for (int i = 0; i < n; ++i) printf("%s%d", i ? "," : "", (int)groups[i]);
    printf("\n");
  } else if (strcmp(cmd, "status") == 0 && argc > 1) {
    StatusField(argv[1]);
  } else if (strcmp(cmd, "mount-tmpfs") == 0 && argc > 1) {
    int rc = mount("tmpfs", argv[1], "tmpfs", 0, NULL);
    printf("mount=%s\n", ErrnoName(rc == 0 ? 0 : errno));
  } else if (strcmp(cmd, "write") == 0 && argc > 2) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = 0;
    if (fd < 0) {
      err = errno;
    } else {
      if (write(fd, argv[2], strlen(argv[2])) < 0) err = errno;
      close(fd);
    }
    printf("write=%s\n", ErrnoName(err));
  } else if (strcmp(cmd, "read") == 0 && argc > 1) {
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
      printf("read=%s\n", ErrnoName(errno));
    } else {
      char buffer[4096];
      ssize_t n;
      fflush(stdout);
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) {
        if (write(1, buffer, (size_t)n) < 0) break;
      }
      close(fd);
    }
  } else if (strcmp(cmd, "mknod") == 0 && argc > 4) {
    // mknod PATH c|b MAJOR MINOR
    mode_t type = argv[2][0] == 'b' ? S_IFBLK : S_IFCHR;
    dev_t dev = makedev((unsigned)atoi(argv[3]), (unsigned)atoi(argv[4]));
    printf("mknod=%s\n", ErrnoName(mknod(argv[1], type | 0600, dev) == 0 ? 0 : errno));
  } else if (strcmp(cmd, "open") == 0 && argc > 1) {
    // Opens without reading: a device node's open is what device access checks.
    int fd = open(argv[1], O_RDONLY | O_NONBLOCK);
    printf("open=%s\n", ErrnoName(fd >= 0 ? 0 : errno));
    if (fd >= 0) close(fd);
  } else if (strcmp(cmd, "exists") == 0 && argc > 1) {
    struct stat st;
    printf("exists=%d\n", lstat(argv[1], &st) == 0 ? 1 : 0);
  } else if (strcmp(cmd, "ls") == 0 && argc > 1) {
    ListDir("ls", argv[1], 0);
  } else if (strcmp(cmd, "pids") == 0) {
    ListDir("pids", "/proc", 1);
  } else if (strcmp(cmd, "exit") == 0 && argc > 1) {
    fflush(stdout);
    exit(atoi(argv[1]));
  } else if (strcmp(cmd, "kill-self") == 0 && argc > 1) {
    fflush(stdout);
    kill(getpid(), atoi(argv[1]));
    SleepMs(1000);
    printf("kill-self=survived\n");
  } else if (strcmp(cmd, "segv") == 0) {
    fflush(stdout);
    raise(SIGSEGV);
    volatile int* null_pointer = NULL;
    *null_pointer = 1;
  } else if (strcmp(cmd, "cat") == 0) {
    char buffer[4096];
    ssize_t n;
    fflush(stdout);
    while ((n = read(0, buffer, sizeof(buffer))) > 0) {
      if (write(1, buffer, (size_t)n) < 0) break;
    }
  } else if (strcmp(cmd, "tty") == 0) {
    struct winsize ws = {0};
    ioctl(0, TIOCGWINSZ, &ws);
    char* name = ttyname(0);
    printf("isatty=%d ttyname=%s rows=%d cols=%d\n", isatty(0), name ? name : "none",
           ws.ws_row, ws.ws_col);
  } else if (strcmp(cmd, "unshare-user") == 0) {
    int rc = unshare(CLONE_NEWUSER);
    printf("unshare=%s\n", ErrnoName(rc == 0 ? 0 : errno));
  } else if (strcmp(cmd, "ptrace") == 0) {
    long rc = ptrace(PTRACE_TRACEME, 0, NULL, NULL);
    printf("ptrace=%s\n", ErrnoName(rc == 0 ? 0 : errno));
  } else if (strcmp(cmd, "keyctl") == 0) {
    long rc = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0);
    printf("keyctl=%s\n", ErrnoName(rc >= 0 ? 0 : errno));
  } else if (strcmp(cmd, "sleep") == 0 && argc > 1) {
    fflush(stdout);
    SleepMs((long)(atof(argv[1]) * 1000));
  } else if (strcmp(cmd, "orphan") == 0) {
    OrphanTest();
  } else if (strcmp(cmd, "env") == 0 && argc > 1) {
    const char* value = getenv(argv[1]);
    printf("env=%s\n", value ? value : "(unset)");
  } else if (strcmp(cmd, "cwd") == 0) {
    char path[4096];
    printf("cwd=%s\n", getcwd(path, sizeof(path)) ? path : ErrnoName(errno));
  } else if (strcmp(cmd, "umask") == 0) {
    mode_t mask = umask(0);
    umask(mask);
    printf("umask=%04o\n", (unsigned)mask);
  } else if (strcmp(cmd, "trap") == 0 && argc > 1) {
    // Waits for the signal, then exits with its number.
    int sig = atoi(argv[1]);
    signal(sig, OnSignal);
    printf("ready\n");
    fflush(stdout);
    while (g_signal == 0) pause();
    printf("got=%d\n", (int)g_signal);
    fflush(stdout);
    exit((int)g_signal);
  } else if (strcmp(cmd, "winch") == 0) {
    // The terminal's size, then again after the next SIGWINCH.
    struct winsize ws = {0};
    signal(SIGWINCH, OnSignal);
    ioctl(0, TIOCGWINSZ, &ws);
    printf("size=%dx%d ready\n", ws.ws_row, ws.ws_col);
    fflush(stdout);
    while (g_signal == 0) pause();
    ioctl(0, TIOCGWINSZ, &ws);
    printf("resized=%dx%d\n", ws.ws_row, ws.ws_col);
    fflush(stdout);
  } else if (strcmp(cmd, "alloc") == 0 && argc > 1) {
    long megabytes = atol(argv[1]);
    for (long i = 0; i < megabytes; ++i) {
      char* block = malloc(1 << 20);
      if (block == NULL) break;
      memset(block, 1, 1 << 20);
    }
    printf("alloc=done\n");
  } else if (strcmp(cmd, "connect") == 0 && argc > 2) {
    // TCP connect with a 3 s timeout; reads one line back when there is one.
    int sock = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    int rc = connect(sock, (struct sockaddr*)&addr, sizeof(addr));
    int err = rc == 0 ? 0 : errno;
    if (rc != 0 && errno == EINPROGRESS) {
      struct pollfd p = {sock, POLLOUT, 0};
      err = poll(&p, 1, 3000) == 1 ? 0 : ETIMEDOUT;
      socklen_t len = sizeof(err);
      if (err == 0) getsockopt(sock, SOL_SOCKET, SO_ERROR, &err, &len);
    }
    printf("connect=%s\n", err == ETIMEDOUT ? "timeout" : ErrnoName(err));
    close(sock);
  } else if (strcmp(cmd, "ns") == 0 && argc > 1) {
    char path[64], target[256] = {0};
    snprintf(path, sizeof(path), "/proc/self/ns/%s", argv[1]);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    printf("ns=%s\n", n > 0 ? target : ErrnoName(errno));
  } else if (strcmp(cmd, "readlink") == 0 && argc > 1) {
    char target[4096] = {0};
    ssize_t n = readlink(argv[1], target, sizeof(target) - 1);
    printf("readlink=%s\n", n >= 0 ? target : ErrnoName(errno));
  } else if (strcmp(cmd, "echo") == 0) {
    for (int i = 1; i < argc; ++i) printf("%s%s", i > 1 ? " " : "", argv[i]);
    printf("\n");
  } else {
    fprintf(stderr, "probe: unknown command %s\n", cmd);
    return 2;
  }
  fflush(stdout);
  return 0;
}

int main(int argc, char** argv) {
  int start = 1;
  for (int i = 1; i <= argc; ++i) {
    if (i == argc || strcmp(argv[i], "+") == 0) {
      if (i > start) {
        char* saved = argv[i];
        argv[i] = NULL;
        int rc = RunOne(i - start, argv + start);
        argv[i] = saved;
        if (rc != 0) return rc;
      }
      start = i + 1;
    }
  }
  return 0;
}
