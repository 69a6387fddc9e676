// UTF-8 helpers and the GPT-2 byte-to-unicode map that byte-level BPE vocabularies are written in.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tl {

// Offset of the first byte that does not start a valid UTF-8 sequence (overlong forms, surrogates and
// code points above U+10FFFF are invalid, as in Rust's str), or npos when `s` is valid.
size_t utf8_invalid_at(std::string_view s);
// Throws tl::Error "invalid UTF-8 at byte N" unless `s` is valid UTF-8.
void check_utf8(std::string_view s);

void append_utf8(std::string& out, uint32_t cp);
// Decodes the code point at s[i] (which must be valid UTF-8) and advances i past it.
uint32_t next_codepoint(std::string_view s, size_t& i);

// GPT-2 map: bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF stand for themselves; the other 68 bytes map in order
// to U+0100, U+0101, ... so that every token is printable text.
uint32_t byte_to_codepoint(uint8_t b);
// The byte a code point stands for, or -1 if it is not one of the 256 map targets.
int codepoint_to_byte(uint32_t cp);
// Each byte replaced by its map target, UTF-8 encoded ("hello world" -> "helloĠworld").
std::string bytes_to_unicode(std::string_view bytes);
// The inverse; nullopt when `s` holds a character outside the map (or is not valid UTF-8).
std::optional<std::string> unicode_to_bytes(std::string_view s);

}  // namespace tl
