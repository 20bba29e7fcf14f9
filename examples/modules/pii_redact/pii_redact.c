/*
 * pii_redact: input.text with personal data replaced, as an aion WASM module (docs/modules.md). It
 * is the local step of the hybrid route of draft_reply: what it leaves is what a cloud model sees.
 *
 *   [email]  an e-mail address: local@domain.tld (the domain has a dot, its last label two or more
 *            letters; letters of any script in both parts);
 *   [card]   a payment card number: 13 to 19 digits, in one group or in groups of 3 or more digits
 *            all joined by single spaces or all by single dashes, not starting with 0, and passing
 *            the Luhn check; a number that fails it (an order number) is left alone;
 *   [phone]  a telephone number: "+" and 8 to 15 digits ("+44 20 7946 0958", "+14155550100"), or,
 *            without "+", 10 to 12 digits in two or more groups ("(555) 123-4567", "020 7946 0958",
 *            "555.123.4567"), or 11 to 15 from an international "00". Groups are joined by a space,
 *            "-", "." or parentheses. Dotted quads (192.168.10.200) are not phones.
 *
 * A number is only taken whole: a letter or digit (of any script) right before or after it (A1234,
 * 4111...1111x) makes it something else. Ordinary numbers (years, amounts, dates, times, short codes) are kept.
 *
 * Output: {"text": the redacted text, "redacted": {"email": n, "phone": n, "card": n}}; one log line
 * gives the counts, never what was found. The work is linear in the text.
 */
#include "aion_module.h"

enum { NONE = 0, EMAIL = 1, CARD = 2, PHONE = 3, START = 0x80, KIND = 0x7F };
static const char *const PLACEHOLDER[] = {"", "[email]", "[card]", "[phone]"};

#define MAX_GROUPS 64 /* digit groups looked at together; a longer run is cut into pieces */

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int is_alnum(unsigned char c) { return is_digit(c) || is_alpha(c); }

/* Whether a non-ASCII code point is a letter or digit of some script: not punctuation, a symbol,
 * a space or an emoji. */
static int is_letter_cp(uint32_t cp) {
    if (cp <= 0xBF || cp == 0xD7 || cp == 0xF7 || cp == 0xFEFF || cp == 0xFFFD)
        return 0;
    if ((cp >= 0x2000 && cp <= 0x2BFF) || (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFF00 && cp <= 0xFF0F) ||
        (cp >= 0xFF1A && cp <= 0xFF20) || (cp >= 0xFF3B && cp <= 0xFF40) || (cp >= 0xFF5B && cp <= 0xFF65) ||
        (cp >= 0x1F000 && cp <= 0x1FFFF))
        return 0;
    return 1;
}

/* The length of the letter (of any script) that starts at t[i], 0 when there is none. */
static size_t letter_at(const char *t, size_t n, size_t i) {
    uint32_t cp;
    size_t len = aion_utf8((const unsigned char *)t + i, n - i, &cp);
    return len > 1 && is_letter_cp(cp) ? len : 0;
}

/* The length of the letter (of any script) that ends right before t[i], 0 when there is none. */
static size_t letter_before(const char *t, size_t i) {
    size_t k = i;
    while (k > 0 && i - k < 4 && ((unsigned char)t[k - 1] & 0xC0) == 0x80)
        k--;
    if (k == 0)
        return 0;
    k--;
    return letter_at(t, i, k) == i - k ? i - k : 0;
}

/* Whether t[i - 1] or t[i] continues a word (a letter, a digit or "_" of any script), so that a
 * number or an address cannot end or begin there. */
static int glued_before(const char *t, size_t i) {
    if (i == 0)
        return 0;
    unsigned char c = (unsigned char)t[i - 1];
    return c < 0x80 ? is_alnum(c) || c == '_' : letter_before(t, i) > 0;
}

static int glued_after(const char *t, size_t n, size_t i) {
    if (i >= n)
        return 0;
    unsigned char c = (unsigned char)t[i];
    return c < 0x80 ? is_alnum(c) || c == '_' : letter_at(t, n, i) > 0;
}

static void mark(unsigned char *m, size_t a, size_t b, int kind) {
    m[a] = (unsigned char)(kind | START);
    for (size_t i = a + 1; i < b; i++)
        m[i] = (unsigned char)kind;
}

/* -- e-mail addresses ------------------------------------------------------------------------ */

static int is_local(unsigned char c) {
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

static int is_domain(unsigned char c) { return is_alnum(c) || c == '.' || c == '-'; }

/* 1 when d[0..n) is a domain name: labels of letters (of any script), digits and inner dashes, two
 * or more of them, the last of two or more ASCII letters. */
static int good_domain(const char *d, size_t n) {
    size_t labels = 0, i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && d[j] != '.')
            j++;
        if (j == i || d[i] == '-' || d[j - 1] == '-' || j - i > 63)
            return 0;
        labels++;
        if (j == n) {
            if (j - i < 2)
                return 0;
            for (size_t k = i; k < j; k++)
                if (!is_alpha((unsigned char)d[k]))
                    return 0;
        }
        i = j + 1;
    }
    return labels >= 2;
}

static size_t find_emails(const char *t, size_t n, unsigned char *m) {
    size_t found = 0;
    for (size_t at = 0; at < n; at++) {
        const char *sign = memchr(t + at, '@', n - at);
        if (sign == NULL)
            break;
        at = (size_t)(sign - t);
        size_t l = at, len;
        while (l > 0 && !m[l - 1]) {
            if (is_local((unsigned char)t[l - 1]))
                l--;
            else if ((len = letter_before(t, l)) > 0)
                l -= len;
            else
                break;
        }
        while (l < at && t[l] == '.')
            l++;
        if (l == at || t[at - 1] == '.')
            continue;
        size_t r = at + 1;
        while (r < n) {
            if (is_domain((unsigned char)t[r]))
                r++;
            else if ((len = letter_at(t, n, r)) > 0)
                r += len;
            else
                break;
        }
        while (r > at + 1 && (t[r - 1] == '.' || t[r - 1] == '-'))
            r--;
        if (!good_domain(t + at + 1, r - at - 1))
            continue;
        mark(m, l, r, EMAIL);
        found++;
        at = r - 1;
    }
    return found;
}

/* -- numbers --------------------------------------------------------------------------------- */

typedef struct {
    size_t start, end;  /* the group's digits */
    char sep;           /* how it joins the group before it: ' ', '-', '.', 'p' (parentheses or a
                           two-character join); 0 for the first group of a run */
    int good;           /* it may begin or end a number: no letter or digit glued to it */
} group;

static int luhn(const char *t, const group *g, size_t first, size_t last) {
    int sum = 0, twice = 0;
    for (size_t k = last + 1; k-- > first;) {
        for (size_t i = g[k].end; i-- > g[k].start;) {
            int d = t[i] - '0';
            if (twice && (d *= 2) > 9)
                d -= 9;
            sum += d;
            twice = !twice;
        }
    }
    return sum % 10 == 0;
}

static size_t digits(const group *g, size_t first, size_t last) {
    size_t n = 0;
    for (size_t k = first; k <= last; k++)
        n += g[k].end - g[k].start;
    return n;
}

/* Cards: each maximal stretch of groups joined by one kind of single space or dash, taken whole;
 * not one joined to more digits by a dot (the decimals of 3.14159265358979). */
static size_t find_cards(const char *t, const group *g, size_t ng, unsigned char *m) {
    size_t found = 0, first = 0;
    while (first < ng) {
        size_t last = first;
        char sep = first + 1 < ng ? g[first + 1].sep : 0;
        if (sep == ' ' || sep == '-')
            while (last + 1 < ng && g[last + 1].sep == sep)
                last++;
        size_t n = digits(g, first, last);
        int grouped = 1;
        for (size_t k = first; k <= last && last > first; k++)
            grouped &= g[k].end - g[k].start >= 3;
        int decimal = g[first].sep == '.' || (last + 1 < ng && g[last + 1].sep == '.');
        if (g[first].good && g[last].good && !decimal && n >= 13 && n <= 19 && grouped &&
            t[g[first].start] != '0' && luhn(t, g, first, last)) {
            mark(m, g[first].start, g[last].end, CARD);
            found++;
        }
        first = last + 1;
    }
    return found;
}

/* Phones: each maximal stretch of groups not already taken, with the "+" or "(" before it. */
static size_t find_phones(const char *t, const group *g, size_t ng, unsigned char *m) {
    size_t found = 0, first = 0;
    while (first < ng) {
        if (m[g[first].start]) {
            first++;
            continue;
        }
        size_t last = first;
        while (last + 1 < ng && !m[g[last + 1].start])
            last++;
        size_t from = g[first].start;
        int plus = 0, parens = 0;
        if (g[first].sep == 0) {
            if (from > 0 && t[from - 1] == '(')
                from--, parens = 1;
            if (from > 0 && t[from - 1] == '+')
                from--, plus = 1;
            if (glued_before(t, from))
                plus = -1; /* glued to a word */
        }
        size_t count = digits(g, first, last), groups = last - first + 1;
        int dots = 1, dotted_quad = 0, small = 1;
        for (size_t k = first + 1; k <= last; k++) {
            dots &= g[k].sep == '.';
            parens |= g[k].sep == 'p';
        }
        for (size_t k = first; k <= last; k++)
            small &= g[k].end - g[k].start <= 3;
        dotted_quad = groups == 4 && dots && small;
        int ok;
        if (plus < 0 || !g[first].good || !g[last].good || dotted_quad)
            ok = 0;
        else if (plus)
            ok = count >= 8 && count <= 15;
        else if (t[g[first].start] == '0' && g[first].end - g[first].start >= 2 && t[g[first].start + 1] == '0')
            ok = groups >= 2 && count >= 11 && count <= 15;
        else
            ok = (groups >= 2 || parens) && count >= 10 && count <= 12 && (!dots || groups >= 3);
        if (ok) {
            mark(m, from, g[last].end, PHONE);
            found++;
        }
        first = last + 1;
    }
    return found;
}

/* How the group at j joins the one that ended at i: its separator kind, or 0 when it does not (the
 * join is at most two characters of " -.()", with at most one space). */
static char join(const char *t, size_t i, size_t j) {
    size_t len = j - i, spaces = 0;
    if (len == 0 || len > 2)
        return 0;
    for (size_t k = i; k < j; k++) {
        char c = t[k];
        if (c != ' ' && c != '-' && c != '.' && c != '(' && c != ')')
            return 0;
        spaces += c == ' ';
    }
    if (spaces > 1)
        return 0;
    if (len == 1)
        return t[i] == '(' || t[i] == ')' ? 'p' : t[i];
    return 'p';
}

static void find_numbers(const char *t, size_t n, unsigned char *m, size_t *cards, size_t *phones) {
    group g[MAX_GROUPS];
    size_t i = 0;
    int glued = 0; /* the run before was cut at MAX_GROUPS: this one goes on from it */
    while (i < n) {
        if (!is_digit((unsigned char)t[i]) || m[i]) {
            i++;
            continue;
        }
        /* a run: digit groups each joined to the one before */
        size_t ng = 0, j = i;
        int cut = 0;
        char sep = 0;
        for (;;) {
            size_t start = j;
            while (j < n && is_digit((unsigned char)t[j]) && !m[j])
                j++;
            g[ng].start = start, g[ng].end = j, g[ng].sep = sep, g[ng].good = 1;
            ng++;
            size_t k = j;
            while (k < n && k - j < 2 && !is_digit((unsigned char)t[k]) && !m[k])
                k++;
            sep = k < n && is_digit((unsigned char)t[k]) && !m[k] ? join(t, j, k) : 0;
            if (!sep)
                break;
            if (ng == MAX_GROUPS) {
                cut = 1;
                break;
            }
            j = k;
        }
        if (glued || glued_before(t, i))
            g[0].good = 0;
        glued = cut;
        if (cut || glued_after(t, n, j))
            g[ng - 1].good = 0;
        *cards += find_cards(t, g, ng, m);
        *phones += find_phones(t, g, ng, m);
        i = j;
    }
}

int main(void) {
    aion_buf text;
    if (!aion_request_text(&text))
        return 0;
    const char *t = text.data ? text.data : "";
    size_t n = text.len;

    unsigned char *m = calloc(n + 1, 1);
    if (m == NULL)
        abort();
    size_t emails = find_emails(t, n, m), cards = 0, phones = 0;
    find_numbers(t, n, m, &cards, &phones);

    aion_buf redacted;
    aion_buf_init(&redacted, AION_MAX_RESPONSE);
    for (size_t i = 0; i < n;) {
        if (!(m[i] & START)) {
            size_t j = i + 1;
            while (j < n && !(m[j] & START))
                j++;
            aion_put(&redacted, t + i, j - i);
            i = j;
            continue;
        }
        int kind = m[i] & KIND;
        aion_puts(&redacted, PLACEHOLDER[kind]);
        i++;
        while (i < n && m[i] == kind)
            i++;
    }

    aion_buf out;
    aion_output_begin(&out, redacted.data ? redacted.data : "", redacted.len);
    if (redacted.overflow)
        out.overflow = 1;
    aion_puts(&out, ",\"redacted\":{\"email\":");
    aion_put_uint(&out, emails);
    aion_puts(&out, ",\"phone\":");
    aion_put_uint(&out, phones);
    aion_puts(&out, ",\"card\":");
    aion_put_uint(&out, cards);
    aion_puts(&out, "}");

    aion_buf line;
    aion_buf_init(&line, 256);
    aion_puts(&line, "pii_redact: ");
    aion_put_uint(&line, emails);
    aion_puts(&line, " email, ");
    aion_put_uint(&line, phones);
    aion_puts(&line, " phone, ");
    aion_put_uint(&line, cards);
    aion_puts(&line, " card redacted");
    aion_log_buf(AION_INFO, &line);

    aion_output_end(&out);
    return 0;
}
