/* Exec-storm driver: `exec_storm N` execs itself N more times (argv[1] counting down),
 * then exits 0. No libc and static, so each exec costs the kernel's execve and little
 * else (no dynamic loader, no libc start-up): the rate measures the exec path and the
 * agent's capture, not this program. Built by tests/src/exec_storm.rs with
 * `gcc -nostdlib -static`. */

#if defined(__x86_64__)
#define NR_EXECVE 59
#define NR_EXIT 60
static long sys3(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(n), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return r;
}
__asm__(".globl _start\n_start:\n\txor %rbp, %rbp\n\tmov %rsp, %rdi\n"
	"\tand $-16, %rsp\n\tcall start_c\n\thlt\n");
#elif defined(__aarch64__)
#define NR_EXECVE 221
#define NR_EXIT 93
static long sys3(long n, long a, long b, long c)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
	return x0;
}
__asm__(".globl _start\n_start:\n\tmov x0, sp\n\tbl start_c\n");
#else
#error "exec_storm: x86_64 or aarch64 only"
#endif

__attribute__((noreturn)) static void die(long code)
{
	for (;;)
		sys3(NR_EXIT, code, 0, 0);
}

__attribute__((noreturn, used)) void start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	unsigned long n = 0;
	char buf[24];
	char *p = buf + sizeof buf;
	char *args[3];

	if (argc < 2)
		die(2);
	for (const char *s = argv[1]; *s; s++) {
		if (*s < '0' || *s > '9')
			die(2);
		n = n * 10 + (unsigned long)(*s - '0');
	}
	if (n == 0)
		die(0);
	n--;
	*--p = 0;
	do {
		*--p = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	args[0] = argv[0];
	args[1] = p;
	args[2] = 0;
	sys3(NR_EXECVE, (long)argv[0], (long)args, (long)envp);
	die(127);
}
