/*
 * echo: the guest that reads the UART.  Enables the PL011 (UARTEN, TXE, RXE; 8-bit words with
 * the FIFOs on), prints "echo: ready", then polls UARTFR.RXFE and reads UARTDR: each typed
 * character is echoed (backspace/DEL erases one), and at the end of a line (CR, LF or CR LF)
 * the line comes back in upper case.  The line "quit" prints "echo: <n> lines, bye" and powers
 * off.  Lines are at most 120 characters (the rest is dropped).  No interrupts: it polls.
 */
#include "rt.h"

#define UART_LCR_H      0x2cu
#define UART_CR         0x30u
#define UART_FR_RXFE    (1u << 4)
#define LCR_H_WLEN8_FEN 0x70u           /* WLEN = 8 bits, FEN */
#define CR_EN_TX_RX     0x301u          /* UARTEN | TXE | RXE */
#define LINE_MAX        120u

static char line[LINE_MAX + 1];

static int getc_polled(void)
{
    while (readl(UART_BASE + UART_FR) & UART_FR_RXFE)
        ;
    return readl(UART_BASE + UART_DR) & 0xff;
}

static int is_quit(const char *s)
{
    return s[0] == 'q' && s[1] == 'u' && s[2] == 'i' && s[3] == 't' && s[4] == 0;
}

int main(void)
{
    uint32_t len = 0, lines = 0;
    int last = 0;

    writel(UART_BASE + UART_LCR_H, LCR_H_WLEN8_FEN);
    writel(UART_BASE + UART_CR, CR_EN_TX_RX);
    uart_puts("echo: ready\n");
    for (;;) {
        int c = getc_polled();
        if (c == '\n' && last == '\r') {        /* CR LF: one end of line */
            last = 0;
            continue;
        }
        last = c;
        if (c == '\r' || c == '\n') {
            line[len] = 0;
            uart_putc('\n');
            if (is_quit(line))
                break;
            for (uint32_t i = 0; i < len; i++)
                uart_putc(line[i] >= 'a' && line[i] <= 'z' ? line[i] - 'a' + 'A' : line[i]);
            uart_putc('\n');
            lines++;
            len = 0;
        } else if (c == 0x7f || c == '\b') {
            if (len) {
                len--;
                uart_puts("\b \b");
            }
        } else if (len < LINE_MAX) {
            line[len++] = (char)c;
            uart_putc((char)c);
        }
    }
    uart_puts("echo: ");
    put_dec(lines);
    uart_puts(" lines, bye\n");
    return 0;
}
