/*
 * summarize_text: an extractive summary of input.text, as an aion WASM module (docs/modules.md).
 *
 * The text is cut into sentences: at . ! ? and their CJK forms when a space or the end follows (and
 * any closing quotes or brackets), but not after a title such as "Dr.", an initial or "e.g.", nor
 * before a lower-case word; and at blank lines. Every word that is not a stop word is worth the
 * number of times it occurs in the whole text (case aside, a final "s" aside; Han and kana count
 * character by character). A sentence scores the sum of its words' worth over the square root of their number,
 * so that a long sentence does not win by its length alone, and the first sentence a quarter more,
 * since a text usually says first what it is about. The best N of the S sentences, N = ceil(S / 4)
 * and at most 25, are kept in their original order, each with its runs of white space made one.
 *
 * The optional secret SUMMARY_STYLE chooses the layout: "bullets" puts each kept sentence on a line
 * of its own after "- ", "numbered" after "1. ", "2. ", ...; with any other value, or none, they are
 * joined with spaces. Its value is compared, never written anywhere.
 *
 * Output: {"text": the summary, "sentences": S, "kept": N}; one log line says how much was kept.
 * The work is linear in the text (a 4 MiB text costs about 0.65 billion units of fuel).
 */
#include <math.h>

#include "aion_module.h"

#define MAX_SENTENCES 100000        /* sentences considered; any text after them is left out */
#define MAX_KEPT 25                 /* sentences a summary keeps at most */
#define SUMMARY_BUDGET (512u << 10) /* bytes of summary at most, well inside a response */
#define MAX_WORDS (1u << 17)        /* distinct words counted; any after them are worth 1 */
#define NO_SLOT UINT32_MAX

typedef struct {
    size_t start, end;    /* the sentence's bytes in the text */
    size_t first, last;   /* its content words in the occurrence list */
    double score;
    uint32_t index;       /* its position in the text */
} sentence;

typedef struct {
    const char *word; /* in the text (or a stop word) */
    uint32_t hash, len, count;
} slot;

typedef struct {
    slot *slots;
    size_t mask, used, room;
} table;

static const char *const STOP_WORDS[] = {
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are",
    "aren't", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but",
    "by", "can", "can't", "cannot", "could", "did", "didn't", "do", "does", "doesn't", "doing", "don't",
    "down", "during", "each", "even", "ever", "every", "few", "for", "from", "further", "get", "gets",
    "got", "had", "has", "hasn't", "have", "haven't", "having", "he", "her", "here", "hers", "herself",
    "him", "himself", "his", "how", "however", "i", "if", "in", "into", "is", "isn't", "it", "its",
    "itself", "just", "like", "made", "make", "many", "may", "me", "might", "more", "most", "much",
    "must", "my", "myself", "never", "no", "nor", "not", "now", "of", "off", "often", "on", "once",
    "one", "only", "or", "other", "others", "our", "ours", "ourselves", "out", "over", "own", "per",
    "quite", "rather", "really", "said", "same", "say", "says", "she", "should", "since", "so", "some",
    "still", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there",
    "these", "they", "this", "those", "though", "through", "thus", "to", "too", "under", "until", "up",
    "upon", "us", "use", "used", "using", "very", "was", "wasn't", "we", "well", "were", "weren't", "what",
    "when", "where", "whether", "which", "while", "who", "whom", "whose", "why", "will", "with", "within",
    "without", "won't", "would", "yet", "you", "your", "yours", "yourself", "yourselves",
};
#define LONGEST_STOP_WORD 10

/* Titles that end in a dot without ending a sentence (compared in lower case). */
static const char *const ABBREVIATIONS[] = {
    "approx", "capt", "col", "dept", "dr", "fig", "gen", "gov", "jr", "lt", "mr", "mrs", "ms", "mt",
    "no", "prof", "rev", "sen", "sgt", "sr", "st", "vs",
};

/* -- characters ------------------------------------------------------------------------------ */

static unsigned char ascii_word[128]; /* letters and digits */
static unsigned char fold[256];       /* ASCII upper case to lower case; every other byte as it is */

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* No-break, typographic and ideographic spaces: a sentence may end before them too. */
static int is_wide_space(uint32_t cp) { return cp == 0xA0 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x3000; }

static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

/* The code point at t[i] and its length in *len; a byte that is not UTF-8 reads as U+FFFD. */
static uint32_t cp_at(const char *t, size_t n, size_t i, size_t *len) {
    uint32_t cp;
    if ((unsigned char)t[i] < 0x80) {
        *len = 1;
        return (unsigned char)t[i];
    }
    *len = aion_utf8((const unsigned char *)t + i, n - i, &cp);
    if (*len == 0) {
        *len = 1;
        return 0xFFFD;
    }
    return cp;
}

static int is_terminator(uint32_t cp) {
    return cp == '.' || cp == '!' || cp == '?' || cp == 0x2026 || cp == 0x3002 || cp == 0xFF01 ||
           cp == 0xFF0E || cp == 0xFF1F;
}

/* CJK full stops end a sentence with no space after them. */
static int is_wide_terminator(uint32_t cp) { return cp == 0x3002 || cp == 0xFF01 || cp == 0xFF1F; }

static int is_closer(uint32_t cp) {
    return cp == '"' || cp == '\'' || cp == ')' || cp == ']' || cp == 0x2019 || cp == 0x201D ||
           cp == 0xBB || cp == 0x300D || cp == 0x300F || cp == 0xFF09;
}

/* Han and kana have no spaces between words: each character counts as a word of its own. */
static int is_ideograph(uint32_t cp) {
    return (cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0x3400 && cp <= 0x9FFF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x20000 && cp <= 0x3FFFF);
}

/* Letters and digits of any script; punctuation, symbols, spaces and emoji are not. */
static int is_word_cp(uint32_t cp) {
    if (cp < 0x80)
        return ascii_word[cp];
    if (cp <= 0xBF || cp == 0xD7 || cp == 0xF7 || cp == 0xFEFF || cp == 0xFFFD)
        return 0;
    if ((cp >= 0x2000 && cp <= 0x2BFF) || (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFF00 && cp <= 0xFF0F) ||
        (cp >= 0xFF1A && cp <= 0xFF20) || (cp >= 0xFF3B && cp <= 0xFF40) || (cp >= 0xFF5B && cp <= 0xFF65) ||
        (cp >= 0x1F000 && cp <= 0x1FFFF))
        return 0;
    return 1;
}

/* -- words ----------------------------------------------------------------------------------- */

/* The next word in t[*i..end): 1 with it in [*ws, *we), or 0 when there is none. A word is a run of
 * word characters, with apostrophes inside it ("don't"); a final "'s" is not part of it. */
static int next_word(const char *t, size_t end, size_t *i, size_t *ws, size_t *we) {
    size_t j = *i, len;
    uint32_t cp = 0;
    for (;;) {
        while (j < end && (unsigned char)t[j] < 0x80 && !ascii_word[(unsigned char)t[j]])
            j++;
        if (j >= end) {
            *i = j;
            return 0;
        }
        cp = cp_at(t, end, j, &len);
        if (is_word_cp(cp))
            break;
        j += len;
    }
    *ws = j;
    j += len;
    if (!is_ideograph(cp)) {
        for (;;) {
            while (j < end && (unsigned char)t[j] < 0x80 && ascii_word[(unsigned char)t[j]])
                j++;
            if (j >= end)
                break;
            cp = cp_at(t, end, j, &len);
            if (cp >= 0x80 && is_word_cp(cp) && !is_ideograph(cp)) {
                j += len;
                continue;
            }
            if ((cp == '\'' || cp == 0x2019) && j + len < end) {
                size_t l2;
                uint32_t after = cp_at(t, end, j + len, &l2);
                if (is_word_cp(after) && !is_ideograph(after)) {
                    j += len;
                    continue;
                }
            }
            break;
        }
    }
    *i = *we = j;
    if (*we - *ws > 2 && lower((unsigned char)t[*we - 1]) == 's' && t[*we - 2] == '\'')
        *we -= 2;
    else if (*we - *ws > 4 && lower((unsigned char)t[*we - 1]) == 's' &&
             memcmp(t + *we - 4, "\xE2\x80\x99", 3) == 0)
        *we -= 4;
    return 1;
}

static uint32_t word_hash(const char *w, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ fold[(unsigned char)w[i]]) * 16777619u;
    return h ? h : 1;
}

static int same_word(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (fold[(unsigned char)a[i]] != fold[(unsigned char)b[i]])
            return 0;
    return 1;
}

static void table_init(table *tb, size_t want) {
    size_t size = 256;
    while (size < want * 2 && size < MAX_WORDS * 2)
        size *= 2;
    tb->slots = calloc(size, sizeof(slot));
    if (tb->slots == NULL)
        abort();
    tb->mask = size - 1;
    tb->used = 0;
    tb->room = size / 2;
}

/* The slot of word w[0..n) of hash h, added (with a count of 0) when `add` and there is room; NULL
 * when it is not there. Words compare without regard to ASCII case. */
static slot *table_find(table *tb, const char *w, size_t n, uint32_t h, int add) {
    for (size_t k = h & tb->mask;; k = (k + 1) & tb->mask) {
        slot *s = &tb->slots[k];
        if (s->hash == 0) {
            if (!add || tb->used >= tb->room)
                return NULL;
            s->hash = h, s->word = w, s->len = (uint32_t)n, s->count = 0;
            tb->used++;
            return s;
        }
        if (s->hash == h && s->len == n && same_word(s->word, w, n))
            return s;
    }
}

/* -- sentences ------------------------------------------------------------------------------- */

typedef struct {
    sentence *items;
    size_t len, cap;
    int cut; /* MAX_SENTENCES reached: the rest of the text is left out */
} sentences;

static int is_abbreviation(const char *t, size_t start, size_t dot) {
    size_t k = dot;
    while (k > start && is_alpha((unsigned char)t[k - 1]))
        k--;
    size_t n = dot - k;
    if (n == 0)
        return 0;
    if (k > start && t[k - 1] == '.') /* e.g., i.e., U.S. */
        return 1;
    if (n == 1 && t[k] >= 'A' && t[k] <= 'Z') /* an initial: J. R. Smith */
        return 1;
    if (n > 6)
        return 0;
    char word[8];
    for (size_t i = 0; i < n; i++)
        word[i] = (char)lower((unsigned char)t[k + i]);
    word[n] = 0;
    for (size_t i = 0; i < sizeof ABBREVIATIONS / sizeof *ABBREVIATIONS; i++)
        if (strcmp(word, ABBREVIATIONS[i]) == 0)
            return 1;
    return 0;
}

static void add_sentence(sentences *ss, const char *t, size_t start, size_t end) {
    while (end > start && is_space((unsigned char)t[end - 1]))
        end--;
    if (end == start)
        return;
    if (ss->len == MAX_SENTENCES) {
        ss->cut = 1;
        return;
    }
    if (ss->len == ss->cap) {
        size_t cap = ss->cap ? ss->cap * 2 : 64;
        sentence *grown = realloc(ss->items, cap * sizeof *grown);
        if (grown == NULL)
            abort();
        ss->items = grown;
        ss->cap = cap;
    }
    sentence *s = &ss->items[ss->len];
    s->start = start, s->end = end, s->first = s->last = 0, s->score = 0, s->index = (uint32_t)ss->len;
    ss->len++;
}

/* The first byte at or after i that may end a sentence: a newline, . ! ?, or a byte of a multi-byte
 * character (which may be a CJK full stop or an ellipsis). Eight bytes at a time while it can. */
static size_t next_mark(const char *t, size_t i, size_t n) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (n - i >= 8) {
        uint64_t x, nl, dot, bang, ask;
        memcpy(&x, t + i, 8);
        nl = x ^ (ones * '\n'), dot = x ^ (ones * '.'), bang = x ^ (ones * '!'), ask = x ^ (ones * '?');
        if ((((nl - ones) & ~nl) | ((dot - ones) & ~dot) | ((bang - ones) & ~bang) | ((ask - ones) & ~ask) | x) &
            highs)
            break;
        i += 8;
    }
    while (i < n) {
        unsigned char c = (unsigned char)t[i];
        if (c == '\n' || c == '.' || c == '!' || c == '?' || c >= 0x80)
            break;
        i++;
    }
    return i;
}

static void split(sentences *ss, const char *t, size_t n) {
    size_t i = 0, start = SIZE_MAX, len;
    while (i < n && !ss->cut) {
        if (start == SIZE_MAX) {
            if (is_space((unsigned char)t[i])) {
                i++;
                continue;
            }
            start = i;
        }
        i = next_mark(t, i, n);
        if (i >= n)
            break;
        if (t[i] == '\n') { /* a blank line ends a sentence */
            size_t j = i + 1;
            while (j < n && (t[j] == ' ' || t[j] == '\t' || t[j] == '\r'))
                j++;
            if (j < n && t[j] == '\n') {
                add_sentence(ss, t, start, i);
                start = SIZE_MAX;
                i = j;
            } else {
                i++;
            }
            continue;
        }
        uint32_t cp = cp_at(t, n, i, &len);
        if (!is_terminator(cp)) {
            i += len;
            continue;
        }
        size_t j = i + len, l2;
        int wide = is_wide_terminator(cp), single_dot = cp == '.';
        while (j < n) {
            uint32_t next = cp_at(t, n, j, &l2);
            if (!is_terminator(next) && !is_closer(next))
                break;
            if (is_terminator(next))
                single_dot = 0;
            wide |= is_wide_terminator(next);
            j += l2;
        }
        int boundary = wide || j >= n || is_space((unsigned char)t[j]) || is_wide_space(cp_at(t, n, j, &l2));
        if (boundary && single_dot && !wide) {
            size_t k = j;
            while (k < n && is_space((unsigned char)t[k]))
                k++;
            if (is_abbreviation(t, start, i) || (k < n && t[k] >= 'a' && t[k] <= 'z'))
                boundary = 0;
        }
        if (boundary) {
            add_sentence(ss, t, start, j);
            start = SIZE_MAX;
        }
        i = j;
    }
    if (start != SIZE_MAX)
        add_sentence(ss, t, start, n);
}

/* -- scoring --------------------------------------------------------------------------------- */

typedef struct {
    uint32_t *items;
    size_t len, cap;
} occurrences;

static void occur(occurrences *o, uint32_t slot_index) {
    if (o->len == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1024;
        uint32_t *grown = realloc(o->items, cap * sizeof *grown);
        if (grown == NULL)
            abort();
        o->items = grown;
        o->cap = cap;
    }
    o->items[o->len++] = slot_index;
}

/* Counts every content word of the text (one pass over it), then scores each sentence from the
 * counts of its own words. */
static void score(sentences *ss, const char *t) {
    size_t words = 0;
    for (size_t k = 0; k < ss->len; k++)
        words += (ss->items[k].end - ss->items[k].start) / 4 + 1;
    table stops, counts;
    size_t nstops = sizeof STOP_WORDS / sizeof *STOP_WORDS;
    table_init(&stops, nstops);
    for (size_t k = 0; k < nstops; k++) {
        size_t n = strlen(STOP_WORDS[k]);
        table_find(&stops, STOP_WORDS[k], n, word_hash(STOP_WORDS[k], n), 1);
    }
    table_init(&counts, words);
    occurrences occ = {0};
    for (size_t k = 0; k < ss->len; k++) {
        sentence *s = &ss->items[k];
        size_t i = s->start, ws, we;
        s->first = occ.len;
        while (next_word(t, s->end, &i, &ws, &we)) {
            size_t n = we - ws;
            if (n < 2)
                continue;
            uint32_t h = word_hash(t + ws, n);
            if (n <= LONGEST_STOP_WORD && table_find(&stops, t + ws, n, h, 0) != NULL)
                continue;
            if (n >= 4 && fold[(unsigned char)t[we - 1]] == 's' && fold[(unsigned char)t[we - 2]] != 's')
                h = word_hash(t + ws, --n); /* a plural counts as its singular: reefs, reef */
            slot *entry = table_find(&counts, t + ws, n, h, 1);
            if (entry)
                entry->count++;
            occur(&occ, entry ? (uint32_t)(entry - counts.slots) : NO_SLOT);
        }
        s->last = occ.len;
    }
    for (size_t k = 0; k < ss->len; k++) {
        sentence *s = &ss->items[k];
        double sum = 0;
        for (size_t w = s->first; w < s->last; w++)
            sum += occ.items[w] == NO_SLOT ? 1 : counts.slots[occ.items[w]].count;
        size_t content = s->last - s->first;
        s->score = content ? sum / sqrt((double)content) * (k == 0 ? 1.25 : 1.0) : 0;
    }
    free(occ.items);
    free(stops.slots);
    free(counts.slots);
}

static int better(const sentence *a, const sentence *b) {
    return a->score > b->score || (a->score == b->score && a->index < b->index);
}

/* The best `want` sentences no longer than `longest` (or, when none is that short, the best one),
 * into best[], in the order of the text; their number. */
static size_t choose(const sentences *ss, size_t want, size_t longest, sentence *best) {
    size_t kept = 0;
    for (int fallback = 0; fallback < 2 && kept == 0; fallback++) {
        if (fallback)
            want = 1;
        for (size_t k = 0; k < ss->len; k++) {
            const sentence *s = &ss->items[k];
            if (!fallback && s->end - s->start > longest)
                continue;
            if (kept == want && !better(s, &best[kept - 1]))
                continue;
            size_t at = kept < want ? kept++ : kept - 1;
            while (at > 0 && better(s, &best[at - 1])) {
                best[at] = best[at - 1];
                at--;
            }
            best[at] = *s;
        }
    }
    for (size_t k = 1; k < kept; k++) { /* by position */
        sentence s = best[k];
        size_t at = k;
        while (at > 0 && best[at - 1].index > s.index) {
            best[at] = best[at - 1];
            at--;
        }
        best[at] = s;
    }
    return kept;
}

/* -- output ---------------------------------------------------------------------------------- */

enum style { PLAIN, BULLETS, NUMBERED };

static enum style read_style(void) {
    static const char name[] = "SUMMARY_STYLE";
    char value[32];
    int n = aion_secret_get(name, (int)sizeof name - 1, value, (int)sizeof value);
    if (n < 0 || n > (int)sizeof value)
        return PLAIN;
    size_t a = 0, b = (size_t)n;
    while (a < b && is_space((unsigned char)value[a]))
        a++;
    while (b > a && is_space((unsigned char)value[b - 1]))
        b--;
    for (size_t i = a; i < b; i++)
        value[i] = (char)lower((unsigned char)value[i]);
    if (b - a == 7 && memcmp(value + a, "bullets", 7) == 0)
        return BULLETS;
    if (b - a == 8 && memcmp(value + a, "numbered", 8) == 0)
        return NUMBERED;
    return PLAIN;
}

/* Appends t[start..end) with every run of white space made one space; cut at a character boundary
 * when it would pass the buffer's limit. */
static void put_collapsed(aion_buf *out, const char *t, size_t start, size_t end) {
    size_t i = start;
    while (i < end) {
        if (is_space((unsigned char)t[i])) {
            while (i < end && is_space((unsigned char)t[i]))
                i++;
            aion_putc(out, ' ');
            continue;
        }
        size_t len;
        cp_at(t, end, i, &len);
        if (out->len + len > out->limit)
            return;
        aion_put(out, t + i, len);
        i += len;
    }
}

int main(void) {
    for (unsigned c = 0; c < 256; c++) {
        fold[c] = lower((unsigned char)c);
        if (c < 128)
            ascii_word[c] = (unsigned char)((c >= '0' && c <= '9') || is_alpha((unsigned char)c));
    }

    aion_buf text;
    if (!aion_request_text(&text))
        return 0;
    const char *t = text.data ? text.data : "";

    sentences ss = {0};
    split(&ss, t, text.len);
    if (ss.len == 0) {
        aion_decline("EMPTY_TEXT", "input.text has nothing to summarise");
        return 0;
    }
    score(&ss, t);
    size_t want = (ss.len + 3) / 4;
    if (want > MAX_KEPT)
        want = MAX_KEPT;
    sentence best[MAX_KEPT];
    size_t kept = choose(&ss, want, SUMMARY_BUDGET / want - 8, best);

    enum style style = read_style();
    aion_buf summary;
    aion_buf_init(&summary, SUMMARY_BUDGET);
    for (size_t k = 0; k < kept; k++) {
        if (k > 0)
            aion_putc(&summary, style == PLAIN ? ' ' : '\n');
        if (style == BULLETS) {
            aion_puts(&summary, "- ");
        } else if (style == NUMBERED) {
            aion_put_uint(&summary, k + 1);
            aion_puts(&summary, ". ");
        }
        put_collapsed(&summary, t, best[k].start, best[k].end);
    }

    aion_buf out;
    aion_output_begin(&out, summary.data ? summary.data : "", summary.len);
    aion_puts(&out, ",\"sentences\":");
    aion_put_uint(&out, ss.len);
    aion_puts(&out, ",\"kept\":");
    aion_put_uint(&out, kept);

    aion_buf line;
    aion_buf_init(&line, 1024);
    aion_puts(&line, "summarize_text: kept ");
    aion_put_uint(&line, kept);
    aion_puts(&line, " of ");
    aion_put_uint(&line, ss.len);
    aion_puts(&line, ss.cut ? " sentences, the rest of the text left out (" : " sentences (");
    aion_put_uint(&line, text.len);
    aion_puts(&line, " bytes in, ");
    aion_put_uint(&line, summary.len);
    aion_puts(&line, " out)");
    if (style != PLAIN)
        aion_puts(&line, ", laid out as SUMMARY_STYLE asks");
    aion_log_buf(AION_INFO, &line);

    aion_output_end(&out);
    return 0;
}
