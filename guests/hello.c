/* hello: the smallest guest.  Prints two lines and powers off through PSCI SYSTEM_OFF. */
#include "rt.h"

int main(void)
{
    uart_puts("Hello from an ARMv7 guest under a Python hypervisor!\n");
    uart_puts("hello: done\n");
    return 0;       /* _start then calls psci_system_off() */
}
