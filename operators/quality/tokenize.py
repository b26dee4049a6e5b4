"""Words in the manner of spaCy's English tokenizer (datatrove's Gopher and repetition filters use it),
vectorised in Polars.

spaCy splits text on whitespace into chunks, then peels punctuation off each chunk: one prefix and one
suffix at a time, stopping early when what is left is a known exception ("Mr.", "e.g.", "don't"), then
splits what remains at infixes (a hyphen between letters, "/" or ":" between words, "," between letters,
"." between a lower-case and an upper-case letter), unless it is a URL. Here the same steps run over the
distinct chunks of a batch at once; plain words and numbers (most chunks) skip them.

Scripts written without spaces between words (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) have no
chunks to speak of: each of their characters (with its combining marks) is a chunk, and so a word, of its
own, and the rest of a whitespace chunk around them is chunked as usual ("（2019年）" gives "（", "2019",
"年", "）"). An elided French or Italian article or pronoun is a token of its own ("l'homme": "l'", "homme"). So a Chinese or Japanese text gives the same words with or without spaces, and its sentence
marks (。！？) stand alone as tokens that end sentences. English text has none of these characters and is
tokenised exactly as before.
"""

from __future__ import annotations

import polars as pl

# spaCy's character classes and rules (spacy/lang/char_classes.py, punctuation.py), rewritten for Rust's
# regex, which has no look-around: a rule that looks at a neighbouring character matches it too.
_PUNCT = r"…,:;!?¿؟¡()\[\]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = r"'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY = r"$£€¥฿₽﷼₠-₿"
_ICONS = r"\p{So}"
_LOWER = r"\p{Ll}\p{Lo}"  # spaCy counts scripts without case as both lower and upper case
_UPPER = r"\p{Lu}\p{Lo}"
_UNITS = ("km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz "
          "m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %").split()

PREFIX = rf"^(?:US\$|C\$|A\$|\.\.+|[§%=—–+{_PUNCT}{_QUOTES}{_CURRENCY}{_ICONS}])"
# Suffixes, in three kinds: marks (no context), a unit or currency after a digit, and a full stop after
# a lower-case letter, a digit, a mark or two capitals ("cat." and "HTML." split, "U.S." and "A." do not).
# Matches of the last two include the character(s) they look at. All end the chunk, so the leftmost
# match spaCy takes is the longest; a tie goes to the marks, which spaCy lists first.
SUFFIX_MARK = rf"(?:\.\.+|……|['’][sS]|[{_PUNCT}{_QUOTES}{_ICONS}—–])$"
SUFFIX_UNIT = rf"[0-9](?:\+|US\$|C\$|A\$|[{_CURRENCY}]|{'|'.join(sorted(_UNITS, key=len, reverse=True))})$"
# ("|" is there because spaCy's class is built from its "|"-joined list of marks.)
SUFFIX_STOP = rf"(?:°[FfCcKk]|[0-9{_LOWER}%²\-+|{_PUNCT}{_QUOTES}]|[{_UPPER}][{_UPPER}])\.$"
# Anything a prefix or suffix could match (a superset: any final full stop)
_AFFIX = rf"{PREFIX}|{SUFFIX_MARK}|{SUFFIX_UNIT}|\.$"
# Infixes, each as (pattern, replacement) putting spaces around the infix; all but the first run twice, as
# a match consumes the character after the infix that the next infix may need before it.
INFIXES = [
    (rf"([^\s.])(\.\.+|…|{_ICONS})", "$1 $2 "),
    (r"([0-9])([+\-*^])([0-9-])", "$1 $2 $3"),
    (rf"([{_LOWER}{_QUOTES}])(\.)([{_UPPER}{_QUOTES}])", "$1 $2 $3"),
    (r"(\p{L}),(\p{L})", "$1 , $2"),
    (r"([\p{L}0-9])(-|–|—|--|---|——|~|[:<>=/])(\p{L})", "$1 $2 $3"),
]
_INFIX_CHAR = rf"[.…{_ICONS}+\-*^,–—~:<>=/]"
_HOST = r"A-Za-z0-9\x{a1}-\x{ffff}"
URL = (rf"^(?:[\w+.\-]{{2,}}://)?(?:[^\s@]+@)?(?:(?:[{_HOST}][{_HOST}_\-]{{0,62}})?[{_HOST}]\.)+"
       rf"[{_LOWER}]{{2,63}}(?::\d{{2,5}})?(?:[/?#]\S*)?$")

# Exceptions kept whole: abbreviations ending in "." that the suffix rule would split, emoticons, a few more.
_ABBREVIATIONS = (
    "Mr Mrs Ms Messrs Dr Prof Rev Gen Gov Sen Rep Adm St Mt Jr Inc Ltd Co co Corp Bros vs "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec "
    "Ak Ala Ariz Ark Calif Colo Conn Del Fla Ga Ia Id Ill Ind Kan Kans Ky La Mass Md Mich Minn Miss Mo Mont "
    "Neb Nebr Nev Okla Ore Pa Tenn Va Wash Wis "
    "e.g i.e E.g I.e E.G I.E a.m p.m v.s Ph.D D.C N.C N.D N.H N.J N.M N.Y S.C °C °F °K °c °f °k "
    "a b c d e f g h i j k l m n o p q r s t u v w x y z ä ö ü"
).split()
_EMOTICONS = (
    ":) :-) :)) :-)) :))) :( :-( :(( :-(( :((( :D :-D ;) ;-) ;D ;-D :P :-P :p :-p :O :-O :o :-o :/ :-/ :| :-| "
    ":] :-] :} :-} :* :-* :x :X :-x :-X :3 :-3 :> :-> :0 :-0 :1 :'( :') (: (-: (; (-; ): )-: =) =( =D =/ =| =] =[ "
    "]= [: [-: [= 8) 8-) 8D 8-D <3 <33 <333 </3 xD xDD XD XDD ^_^ ^__^ -_- -__- o_o O_O o.O O.o o.o O.O "
    ">.< <.< >.> v.v V.V ._. (._.) (^_^) (-_-) @_@ ;_;"
).split()
_ELIDED = ["c", "d", "j", "l", "m", "n", "s", "t", "qu", "jusqu", "lorsqu", "puisqu", "dell", "all", "dall", "nell",
           "sull", "coll", "un", "quest", "quell"]
WHOLE = [a + "." for a in _ABBREVIATIONS] + _EMOTICONS + [f"{e}{q}" for e in _ELIDED + [e.capitalize() for e in _ELIDED]
                                                              for q in "'’"] + ["C++", "and/or", "w/o", "'s", "'S", "’s", "’S", "''",
                                                         "’’", "‘s", "‘S", "'em", "'cause", "'bout", "o'clock", "ma'am"]
# Exceptions split in two: contractions written without an apostrophe, and times like "10am".
_NEGATABLE = "ai are ca could dare did does do had has have is may might must need ought sha should was were wo would"
_CLITICS = {  # clitic -> the words it attaches to without an apostrophe
    "d": "he how i it that there these they this those we what when where who why you",
    "ll": "how it that there these they this those what when where who why you",
    "re": "how there these they those what when where who why you",
    "s": "he how she that there this what when where who why",
    "ve": "could how i might must should there these they those we what when where who why would you",
    "m": "i",
}
_SPLIT_PAIRS = ([(w, "nt") for w in _NEGATABLE.split()] + [(w, c) for c, ws in _CLITICS.items() for w in ws.split()]
                + [("can", "not"), ("gon", "na"), ("got", "ta"), ("y'", "all"), ("y’", "all")]
                + [(f"{h}", s) for h in range(1, 13) for s in ("am", "pm", "a.m.", "p.m.")])
SPLIT = {f"{a}{b}": f"{a} {b}" for a, b in _SPLIT_PAIRS} | {"ima": "i m a"}
SPLIT |= {k.capitalize(): v.capitalize() for k, v in SPLIT.items()}
# Contractions with an apostrophe: "don't" -> do n't, "I'm" -> I 'm.
CONTRACTION = r"^(\p{L}+?)(n['’]t|['’](?:[dmDM]|ll|LL|re|RE|ve|VE))$"
_MERGEABLE = [w for w in WHOLE if not w.isalnum()]
_EXCEPTIONS = WHOLE + list(SPLIT)
# Rounds of affix peeling done one affix at a time (almost every chunk needs fewer); then runs of
# punctuation are peeled whole.
_PEEL_ROUNDS = 6
_RUN = rf"(?:\.\.+|[{_PUNCT}{_QUOTES}{_ICONS}—–])+"
_PLAIN = r"^(?:[\p{L}\p{M}]+|[0-9]+)$"
# Scripts written without spaces between words: each character (with its marks) is a word.
UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
UNSPACED_WORD = rf"[{UNSPACED}]\p{{M}}*"
CHUNK = rf"{UNSPACED_WORD}|[^\s{UNSPACED}]+"
# French and Italian elision: "l'homme", "qu'il", "dell'anno" are two words, as their tokenizers (and so
# FineWeb-2's calibration) count them. English has no such words but a few names ("D'Angelo").
ELISION = rf"^((?i:{'|'.join(_ELIDED)})['’])(\p{{L}}.*)$"
_WORD_AND_MARK = r"^(?:\p{L}+[,;:!?)]|\p{L}*[\p{Ll}\p{Lo}]\.)$"  # the mark is a suffix, the word has no affix


def words(texts: pl.Series) -> pl.Series:
    """Each text's tokens, as a list of strings (an empty or null text has none)."""
    table = token_table(texts).group_by("row", maintain_order=True).agg("token")
    rows = pl.DataFrame({"row": pl.arange(0, len(texts), eager=True, dtype=pl.UInt32)})
    out = rows.join(table, on="row", how="left", maintain_order="left")["token"]
    return out.fill_null(pl.lit([], dtype=pl.List(pl.String))).alias(texts.name)


def token_table(texts: pl.Series) -> pl.DataFrame:
    """One row per token, in order: `row` (the text's position in `texts`) and `token`."""
    chunks, hard, split = _chunks(texts)
    tokens = hard.join(split, left_on="token", right_on="chunk").select("row", "chunk_id", pl.col("tokens").alias("token"))
    return (pl.concat([chunks.filter(~pl.col("hard")).select("row", "chunk_id", "token"), tokens.explode("token")])
            .sort("chunk_id", maintain_order=True).drop("chunk_id"))


def token_counts(texts: pl.Series) -> pl.Series:
    """len(words(texts)), without building the lists."""
    chunks, hard, split = _chunks(texts)
    counts = chunks.join(split.select("chunk", pl.col("tokens").list.len().alias("n")), left_on="token",
                         right_on="chunk", how="left").group_by("row").agg(pl.col("n").fill_null(1).sum())
    rows = pl.DataFrame({"row": pl.arange(0, len(texts), eager=True, dtype=pl.UInt32)})
    return rows.join(counts, on="row", how="left", maintain_order="left")["n"].fill_null(0).cast(pl.Int64).alias(texts.name)


def _chunks(texts: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The texts' whitespace-separated chunks (row, chunk_id, token, hard), the hard ones (not a plain word
    or number, or an exception), and the distinct hard chunks with their tokens (chunk, tokens)."""
    frame = pl.DataFrame({"token": texts.cast(pl.String).fill_null("")}).with_row_index("row")
    unspaced = frame["token"].str.contains(f"[{UNSPACED}]")  # the other texts' chunks are runs of non-spaces
    split = frame.filter(~unspaced).with_columns(pl.col("token").str.extract_all(r"\S+"))
    if unspaced.any():
        split = pl.concat([split, frame.filter(unspaced).with_columns(pl.col("token").str.extract_all(CHUNK))]).sort("row")
    chunks = (split.explode("token").filter(pl.col("token").is_not_null())
              .with_row_index("chunk_id")
              .with_columns((~pl.col("token").str.contains(_PLAIN) | pl.col("token").is_in(_EXCEPTIONS)).alias("hard")))
    hard = chunks.filter("hard")
    return chunks, hard, _split_chunks(hard["token"].unique())


def _merge_split_exceptions(table: pl.DataFrame) -> pl.DataFrame:
    """Join two neighbouring tokens of a chunk that spell an exception ("(see):" gives ")" ":", which
    spaCy's special-case matcher turns back into the emoticon "):"; "St.Helens" gives "St." "Helens").
    `table` has one row per token: `chunk` and `token`."""
    token, chunk = pl.col("token"), pl.col("chunk")
    pair = token + token.shift(-1)
    merge = ((chunk == chunk.shift(-1)) & pair.is_in(_MERGEABLE)).fill_null(False)
    merge = merge & ~merge.shift(1, fill_value=False)  # of overlapping pairs, the first
    return (table.with_columns(pl.when(merge).then(pair).otherwise(token).alias("token"), merge.alias("merge"))
            .filter(~pl.col("merge").shift(1, fill_value=False))
            .drop("merge"))


def _is_exception(s: pl.Expr) -> pl.Expr:
    return s.is_in(_EXCEPTIONS) | s.str.contains(CONTRACTION)


def _split_chunks(chunks: pl.Series) -> pl.DataFrame:
    """chunk -> its tokens: affixes peeled, then the middle split as an exception, kept as a URL or split
    at infixes. Peeled affixes gather in `pre` and `suf` as space-separated strings (tokens hold no spaces)."""
    elided = pl.col("chunk").str.extract(ELISION, 1).fill_null("")  # "l'" of "l'homme": a token of its own
    state = pl.DataFrame({"chunk": chunks}).with_columns(
        pl.col("chunk").str.slice(elided.str.len_chars()).alias("rest"), elided.alias("pre"), suf=pl.lit(""))
    # The commonest case needs no rounds: a word and one mark ("said,", "it.").
    chunk, word = pl.col("chunk"), pl.col("chunk").str.slice(0, pl.col("chunk").str.len_chars() - 1)
    simple = chunk.str.contains(_WORD_AND_MARK) & ~chunk.is_in(_EXCEPTIONS) & ~word.is_in(_EXCEPTIONS)
    state = state.with_columns(simple.alias("simple"))
    finished = [state.filter("simple").select("chunk", word.alias("rest"), "pre", chunk.str.slice(-1).alias("suf"))]
    state = state.filter(~pl.col("simple")).drop("simple")
    for _ in range(_PEEL_ROUNDS):
        if state.is_empty():
            break
        state = _peel(state)
        finished.append(state.filter("stop"))
        state = state.filter(~pl.col("stop"))
    state = pl.concat([*finished, _peel_runs(state)], how="diagonal")
    rest = pl.col("rest")
    exception = rest.is_in(WHOLE) | rest.is_in(list(SPLIT)) | rest.str.contains(CONTRACTION)
    state = state.with_columns(exception.alias("exception"))
    plain = state.filter(~pl.col("exception") & ~rest.str.contains(_INFIX_CHAR))
    exceptions = state.filter("exception").with_columns(
        pl.when(rest.str.contains(CONTRACTION)).then(rest.str.replace(CONTRACTION, "$1 $2"))
        .otherwise(rest.replace(SPLIT)).alias("rest"))
    others = state.filter(~pl.col("exception") & rest.str.contains(_INFIX_CHAR)).with_columns(
        pl.when(rest.str.contains(URL)).then(rest).otherwise(_split_infixes(rest)).alias("rest"))
    tokens = pl.concat_str("pre", "rest", "suf", separator=" ").str.split(" ")
    table = pl.concat([plain, exceptions, others]).select("chunk", tokens.alias("token")).explode("token")
    return (table.filter(pl.col("token") != "").pipe(_merge_split_exceptions)
            .group_by("chunk", maintain_order=True).agg(pl.col("token").alias("tokens")))


def _peel(state: pl.DataFrame) -> pl.DataFrame:
    """One round of spaCy's affix loop over `rest`: stop at an exception; else find a prefix and a suffix
    (of what follows the prefix); if `rest` minus one of them is an exception, peel that one and stop;
    else peel both. `stop` is set when nothing was peeled or an exception was reached."""
    rest, p, s = pl.col("rest"), pl.col("p"), pl.col("s")
    plen, slen, length = p.str.len_chars(), s.str.len_chars(), rest.str.len_chars()
    prefix = rest.str.extract(PREFIX, 0).fill_null("")
    no_prefix = pl.col("exception") | ((prefix == "+") & rest.str.contains(r"^\+[0-9]"))  # "+" only before a non-digit
    return (
        state.lazy()
        .with_columns(_is_exception(rest).alias("exception"))
        .with_columns(pl.when(no_prefix).then(pl.lit("")).otherwise(prefix).alias("p"))
        .with_columns(pl.when(pl.col("exception")).then(pl.lit("")).otherwise(_suffix(rest.str.slice(plen))).alias("s"))
        .with_columns(((plen > 0) & (plen < length) & _is_exception(rest.str.slice(plen))).alias("pre_exception"))
        .with_columns((~pl.col("pre_exception") & (slen > 0) & (slen < length)
                       & _is_exception(rest.str.slice(0, length - slen))).alias("suf_exception"))
        .with_columns(((plen > 0) & ~pl.col("suf_exception")).alias("take_pre"),
                      ((slen > 0) & ~pl.col("pre_exception")).alias("take_suf"))
        .with_columns(pl.when("take_pre").then(plen).otherwise(0).alias("start"),
                      pl.when("take_suf").then(slen).otherwise(0).alias("cut"))
        .with_columns(
            pl.when("take_pre").then(pl.concat_str("pre", "p", separator=" ")).otherwise("pre").alias("pre"),
            pl.when("take_suf").then(pl.concat_str("s", "suf", separator=" ")).otherwise("suf").alias("suf"),
            rest.str.slice("start", length - pl.col("start") - pl.col("cut")).alias("rest"),
            (pl.col("exception") | pl.col("pre_exception") | pl.col("suf_exception") | ((plen == 0) & (slen == 0))
             | (length == plen + slen)).alias("stop"))
        .with_columns(pl.col("stop") | ~rest.str.contains(_AFFIX))  # nothing left to peel next round
        .select("chunk", "rest", "pre", "suf", "stop")
        .collect()
    )


def _suffix(s: pl.Expr) -> pl.Expr:
    mark = s.str.extract(SUFFIX_MARK, 0).fill_null("")
    unit = s.str.extract(SUFFIX_UNIT, 0).str.slice(1).fill_null("")
    stop = pl.when(s.str.contains(SUFFIX_STOP)).then(pl.lit(".")).otherwise(pl.lit(""))
    longest = pl.when(unit.str.len_chars() > stop.str.len_chars()).then(unit).otherwise(stop)
    return pl.when(mark.str.len_chars() >= longest.str.len_chars()).then(mark).otherwise(longest)


def _peel_runs(state: pl.DataFrame) -> pl.DataFrame:
    """The few chunks still peeling after _PEEL_ROUNDS are runs of punctuation ("WOW!!!!!!!!", "______"):
    peel the rest of the leading and trailing runs at once, a token per mark or ellipsis."""
    rest = pl.col("rest")
    lead = rest.str.extract(f"^{_RUN}", 0).fill_null("")
    trail = rest.str.slice(lead.str.len_chars()).str.extract(f"{_RUN}$", 0).fill_null("")
    return state.with_columns(
        pl.concat_str("pre", _one_per_mark(lead), separator=" ").alias("pre"),
        pl.concat_str(_one_per_mark(trail), "suf", separator=" ").alias("suf"),
        rest.str.slice(lead.str.len_chars(), rest.str.len_chars() - lead.str.len_chars() - trail.str.len_chars()),
    )


def _one_per_mark(run: pl.Expr) -> pl.Expr:
    return run.str.extract_all(r"\.\.+|.").list.join(" ")


def _split_infixes(s: pl.Expr) -> pl.Expr:
    for i, (pattern, replacement) in enumerate(INFIXES):
        for _ in range(1 if i == 0 else 2):
            s = s.str.replace_all(pattern, replacement)
    return s


def sentence_counts(texts: pl.Series) -> pl.Series:
    """Sentences per text as spaCy's sentencizer finds them (datatrove's C4 filter counts them): a new
    sentence starts at a token that is not punctuation when a sentence-ending mark stood alone as a token
    since the previous such token ("Mr." and "U.S." are one token each, so they end nothing)."""
    token = pl.col("token")
    table = token_table(texts).with_columns(
        token.str.contains(r"^\p{Sentence_Terminal}$").cast(pl.UInt32).cum_sum().over("row").alias("ends"))
    starts = (table.filter(~token.str.contains(r"^\p{P}+$"))
              .with_columns((pl.col("ends") > pl.col("ends").shift(1).over("row").fill_null(0)).alias("start"))
              .group_by("row").agg(pl.col("start").sum()))
    sentences = table.group_by("row").agg(pl.lit(1, dtype=pl.UInt32).alias("first")).join(starts, on="row", how="left")
    rows = pl.DataFrame({"row": pl.arange(0, len(texts), eager=True, dtype=pl.UInt32)})
    counts = rows.join(sentences, on="row", how="left", maintain_order="left").select(
        (pl.col("first").fill_null(0) + pl.col("start").fill_null(0)).cast(pl.Int64))
    return counts.to_series().alias(texts.name)
