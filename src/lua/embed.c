/* embed.c - lua/echo.lua compiled into the binary, so that a bare
 * `moonring` works from any directory. The Makefile rebuilds this file
 * when lua/echo.lua changes. */
#include "lua_int.h"

__asm__(".section .rodata\n"
        ".global mr_echo_lua\n"
        ".type mr_echo_lua, @object\n"
        "mr_echo_lua:\n"
        ".incbin \"lua/echo.lua\"\n"
        "mr_echo_lua_end:\n"
        ".byte 0\n"
        ".balign 4\n"
        ".global mr_echo_lua_len\n"
        ".type mr_echo_lua_len, @object\n"
        "mr_echo_lua_len:\n"
        ".int mr_echo_lua_end - mr_echo_lua\n"
        ".previous\n");
