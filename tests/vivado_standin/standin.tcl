# A Vivado / Vitis HLS stand-in for the test suite (lpyolo-flow), sourced by the `vivado` and `vitis_hls`
# executables beside it. It runs the Tcl FINN writes in a real Tcl interpreter: Tcl itself resolves every
# variable (an unset `$::env(X)` fails as it would in Vivado), and each Vivado / HLS command is a stub that
# checks what it is given, then writes the least FINN reads next. Nothing here synthesises anything: every file it
# writes carries the marker below (flow.hw.vivado.STANDIN_MARKER), and `python -m flow deploy` refuses such a
# bitfile. `vivado -version` prints a real banner (standin::banner).
#
# What the stubs check (each a defect class a real build would stop on):
#   - every file added, sourced or listed as an IP repository exists; C++ includes given in quotes resolve
#   - no HDL module is defined twice in one project (FINN references shared sources in place for this reason)
#   - the part is the Pynq-Z2's xc7z020clg400-1, the board part tul.com.tw:pynq-z2:part0:1.0 and its board.xml
#     is found in the project's board repository paths
#   - every IP cell's VLNV is in an IP repository or Vivado's catalog; every module-reference cell's module was
#     added and, where it has streams or a reset, carries X_INTERFACE_INFO / X_INTERFACE_PARAMETER for its clock
#     (ASSOCIATED_BUSIF, ASSOCIATED_RESET) and its active-low reset's POLARITY, as every finn-rtllib wrapper does
#     (finn-rtllib's convention; whether Vivado would infer them without is not decided here)
#   - every block-design pin or port named belongs to a cell or port that was created, and every pin of a
#     module-reference or hierarchy cell that get_bd_pins / get_bd_intf_pins names is one its HDL (or the hierarchy)
#     declares: a missing one matches nothing and the connect_bd_net / connect_bd_intf_net given it fails
#   - both sides of every connect_bd_intf_net between module references carry the same TDATA width
#   - every HDL source parses (Verilator --lint-only over the project, at validate_bd_design)
# What it prints in those cases is Vivado's own message for them, each traced to a public transcript below and in
# tests/vivado_standin/README.md; the reports an implementation run writes are real ones (fixtures/).
# An unknown command fails: a FINN version that writes new Tcl needs the stand-in extended, not ignored.

namespace eval standin {
    variable here [file dirname [file normalize [info script]]]
    variable marker "LPYOLO-FLOW VIVADO STAND-IN OUTPUT: not made by Xilinx tools, not a bitstream"
    variable part "xc7z020clg400-1"
    variable board_part "tul.com.tw:pynq-z2:part0:1.0"
    variable tool
    variable modules [dict create]   ;# module name -> file defining it, per project
    variable files [list]            ;# HDL files added to the project
    variable bdfiles [list]          ;# block designs created in it
    variable cells [dict create]     ;# block-design cell -> what made it
    variable cellrefs [dict create]  ;# module-reference cell -> its module
    variable hierpins [dict create]  ;# hierarchy cell -> the pins created on it
    variable portcache [dict create] ;# module -> its ports and the interfaces Vivado infers from their names
    variable linted 0
    variable ports [dict create]     ;# block-design ports
    variable props [dict create]     ;# "object property" -> value
    variable params [dict create]
    variable repos [list]
    variable project_dir ""
    variable project_name ""
    variable bd ""
    variable top ""
    # Xilinx catalog IPs the Zynq shell and FINN's stitching use (vivado's own repository)
    variable catalog {processing_system7 zynq_ultra_ps_e axi_interconnect smartconnect clk_wiz proc_sys_reset
                      axi_gpio axis_data_fifo axi_dma system_ila}
    # HLS
    variable hls_project ""
    variable hls_top ""
    variable hls_solution ""
}

proc standin::fail {msg} {
    variable tool
    return -code error "stand-in $tool: $msg"
}

# like Vivado and Vitis HLS: a log in the working directory (vivado.log, vitis_hls.log), where FINN points the user
proc standin::note {msg} {
    puts "INFO: \[stand-in\] $msg"
    set log [open $standin::tool.log a]
    puts $log "INFO: \[stand-in\] $msg"
    close $log
}

# a message in Vivado's own words, to the console and vivado.log
proc standin::note_raw {msg} {
    puts $msg
    set log [open $standin::tool.log a]
    puts $log $msg
    close $log
}

# positional arguments of a command, leaving out -options (and the values of those in `valued`)
proc standin::positional {argv {valued {}}} {
    set out [list]
    for {set i 0} {$i < [llength $argv]} {incr i} {
        set a [lindex $argv $i]
        if {[string index $a 0] eq "-" && ![string is double -strict $a]} {
            if {[lsearch -exact $valued $a] >= 0} { incr i }
            continue
        }
        lappend out $a
    }
    return $out
}

proc standin::option {argv name {default ""}} {
    set i [lsearch -exact $argv $name]
    if {$i < 0 || $i + 1 >= [llength $argv]} { return $default }
    return [lindex $argv [expr {$i + 1}]]
}

proc standin::need_file {path what} {
    if {![file exists $path]} { fail "$what: no such file or directory: $path" }
}

# a fixture of real Vivado output (tests/vivado_standin/fixtures), its source lines (# ...) kept as they are
proc standin::fixture {name} {
    set f [open [file join $standin::here fixtures $name] r]
    set text [read $f]
    close $f
    return $text
}

proc standin::write {path text} {
    file mkdir [file dirname $path]
    set f [open $path w]
    puts $f $text
    close $f
}

# ---------------------------------------------------------------------------------------------------- HDL sources
proc standin::add_hdl {path} {
    variable modules
    variable files
    set path [file normalize $path]
    need_file $path "add_files"
    if {[file isdirectory $path]} {
        foreach f [glob -nocomplain -directory $path *.v *.sv *.vh *.svh] { add_hdl $f }
        return
    }
    if {[lsearch -exact $files $path] >= 0} { return }
    lappend files $path
    if {![regexp {\.(v|sv)$} $path]} { return }
    set f [open $path r]
    set text [read $f]
    close $f
    regsub -all {//[^\n]*} $text "" text
    regsub -all {/\*.*?\*/} $text "" text
    foreach {_ name} [regexp -all -inline -line {^\s*(?:\(\*[^\n]*\*\)\s*)?module\s+(?:automatic\s+)?([A-Za-z_][A-Za-z0-9_$]*)} $text] {
        if {[dict exists $modules $name] && [dict get $modules $name] ne $path} {
            fail "module '$name' is defined twice in project $standin::project_name: in [dict get $modules $name] and in $path"
        }
        dict set modules $name $path
    }
}

proc standin::module_text {name} {
    variable modules
    set f [open [dict get $modules $name] r]
    set text [read $f]
    close $f
    set start [string first "module $name" $text]
    set end [string first "endmodule" $text $start]
    return [string range $text $start $end]
}

# a module-reference cell: the module must be in the project and say what its clock and reset are
proc standin::check_module_reference {name} {
    variable modules
    if {![dict exists $modules $name]} {
        fail "create_bd_cell -reference $name: no module '$name' in the project's sources"
    }
    set text [module_text $name]
    set where "module $name ([dict get $modules $name])"
    # a clock that times streams or has a reset must say so (a bare clock input, as FINN's sim_ctrl, need not)
    if {[regexp {\m(ap_clk|aclk|clk)\M} $text -> clk] && [regexp {TDATA|\m(ap_rst_n|aresetn|rst_n)\M} $text]} {
        if {![regexp "X_INTERFACE_INFO\\s*=\\s*\"xilinx.com:signal:clock:1.0\\s+$clk\\s+CLK\"" $text]} {
            fail "$where: clock $clk has no X_INTERFACE_INFO = \"xilinx.com:signal:clock:1.0 $clk CLK\""
        }
        if {![regexp {X_INTERFACE_PARAMETER\s*=\s*"[^"]*ASSOCIATED_BUSIF} $text]} {
            fail "$where: clock $clk has no X_INTERFACE_PARAMETER ASSOCIATED_BUSIF (its streams' clock)"
        }
    }
    if {[regexp {\m(ap_rst_n|aresetn|rst_n)\M} $text -> rst]} {
        if {![regexp {X_INTERFACE_PARAMETER\s*=\s*"[^"]*ASSOCIATED_RESET} $text]} {
            fail "$where: clock has no ASSOCIATED_RESET $rst"
        }
        if {![regexp {X_INTERFACE_PARAMETER\s*=\s*"POLARITY ACTIVE_LOW"} $text]} {
            fail "$where: reset $rst has no X_INTERFACE_PARAMETER = \"POLARITY ACTIVE_LOW\""
        }
    }
}

# ------------------------------------------------------------------------------------------- ports and streams
# a parameter expression with every parameter it names replaced by its value; "" when one is unknown or the
# expression is not one Tcl's expr can evaluate ($clog2, ...)
proc standin::eval_param {e params} {
    while {[regexp -all {\)} $e] > [regexp -all {\(} $e]} { set e [string range $e 0 [string last ")" $e]-1] }
    foreach id [lsort -unique [regexp -all -inline {\m[A-Za-z_]\w*\M} $e]] {
        if {![dict exists $params $id]} { return "" }
        regsub -all "\\m$id\\M" $e [dict get $params $id] e
    }
    if {[catch {expr $e} v]} { return "" }
    return $v
}

# A module's ports (name -> width, "" when not known) and the bus interfaces Vivado infers on a module reference
# from the ports' names, in either case: <name>_TDATA/_TVALID/... (AXI-Stream), <name>_AWADDR/... (AXI4-Lite), as the
# `in0_V`, `out0_V` and `s_axilite` that FINN connects. An interface records its TDATA width and direction.
proc standin::module_ports {name} {
    variable portcache
    if {[dict exists $portcache $name]} { return [dict get $portcache $name] }
    set text [module_text $name]
    regsub -all {//[^\n]*} $text "" text
    regsub -all {/\*.*?\*/} $text "" text
    regsub -all {\(\*.*?\*\)} $text "" text
    set params [dict create]
    foreach {_ n e} [regexp -all -inline {\mparameter\s+(?:(?:integer|int|bit|logic|unsigned|signed|real)\s+)*([A-Za-z_]\w*)\s*=\s*([^,;\n]+)} $text] {
        set v [eval_param [string trim $e] $params]
        if {$v ne ""} { dict set params $n $v }
    }
    set ports [dict create]
    set intfs [dict create]
    foreach {_ dir range port} [regexp -all -inline {\m(input|output|inout)\s+(?:(?:wire|logic|reg|var|signed|unsigned)\s+)*(?:\[([^\]]+)\]\s*)?([A-Za-z_]\w*)} $text] {
        set width 1
        if {$range ne ""} {
            lassign [split $range :] hi lo
            set hi [eval_param $hi $params]
            set lo [eval_param $lo $params]
            set width [expr {$hi ne "" && $lo ne "" ? abs($hi - $lo) + 1 : ""}]
        }
        dict set ports $port $width
        if {[regexp -nocase {^(.+)_(TDATA|TVALID|TREADY|TLAST|TKEEP|TSTRB|TUSER|AWADDR|AWVALID|AWREADY|AWPROT|WDATA|WSTRB|WVALID|WREADY|BRESP|BVALID|BREADY|ARADDR|ARVALID|ARREADY|ARPROT|RDATA|RRESP|RVALID|RREADY)$} $port -> intf sig]} {
            if {![dict exists $intfs $intf]} { dict set intfs $intf [dict create width "" mode ""] }
            if {[string toupper $sig] eq "TDATA"} {
                dict set intfs $intf width $width
                dict set intfs $intf mode [expr {$dir eq "output" ? "Master" : "Slave"}]
            }
        }
    }
    set out [dict create ports $ports intfs $intfs]
    dict set portcache $name $out
    return $out
}

# The pins (kind "pins") or interface pins ("intfs") a cell declares: a module reference's from its HDL, a hierarchy
# cell's as created on it; a catalog or repository IP's are not known here (none is returned, nothing is checked).
proc standin::cell_pins {cell kind} {
    variable cellrefs
    variable hierpins
    if {[dict exists $cellrefs $cell]} {
        set info [module_ports [dict get $cellrefs $cell]]
        return [list 1 [dict keys [dict get $info [expr {$kind eq "pins" ? "ports" : "intfs"}]]]]
    }
    if {[dict exists $hierpins $cell]} {
        return [list 1 [dict get [dict get $hierpins $cell] $kind]]
    }
    return [list 0 {}]
}

# get_bd_pins / get_bd_intf_pins of a pin the cell does not have: Vivado warns and returns nothing,
#   WARNING: [BD 5-235] No pins matched 'get_bd_pins ps_0/SPI0_MISO_I'
#     (https://github.com/pavel-demin/red-pitaya-notes/issues/1079)
#   WARNING: [BD 5-232] No interface pins matched 'get_bd_intf_pins load_0/inp_mem_V_PORTA'
#     (https://github.com/apache/tvm/issues/7726)
# and the connect_bd_net / connect_bd_intf_net given the empty result then fails.
proc standin::bd_pins {cmd kind argv} {
    set out [list]
    foreach o [bd_objects $argv] {
        set path [split $o /]
        set cell [join [lrange $path 0 end-1] /]
        if {[llength $path] > 1 && [string first * $o] < 0} {
            lassign [cell_pins $cell $kind] known pins
            if {$known && [lsearch -exact $pins [lindex $path end]] < 0} {
                set msg [expr {$kind eq "pins" ? "WARNING: \[BD 5-235\] No pins matched '$cmd $o'" : "WARNING: \[BD 5-232\] No interface pins matched '$cmd $o'"}]
                note_raw $msg
                continue
            }
        }
        lappend out $o
    }
    return $out
}

proc standin::intf_width {pin} {
    variable cellrefs
    set path [split $pin /]
    set cell [join [lrange $path 0 end-1] /]
    if {![dict exists $cellrefs $cell]} { return "" }
    set intfs [dict get [module_ports [dict get $cellrefs $cell]] intfs]
    set name [lindex $path end]
    if {![dict exists $intfs $name]} { return "" }
    return [dict get $intfs $name width]
}

# connect_bd_net with fewer than two objects (a get_bd_pins that matched nothing):
#   ERROR: [BD 41-701] connect_bd_net requires at least two pins/ports, or one pin/port and a net
#     (https://github.com/pavel-demin/red-pitaya-notes/issues/1079)
proc standin::connect {cmd argv} {
    set objs [positional $argv {-net -intf_net -boundary_type}]
    set objs [concat {*}$objs]
    if {[llength $objs] < 2} {
        if {$cmd eq "connect_bd_net"} {
            fail "ERROR: \[BD 41-701\] connect_bd_net requires at least two pins/ports, or one pin/port and a net (given: $objs)"
        }
        fail "ERROR: \[BD 5-106\] Arguments to the connect_bd_intf_net command cannot be empty. (given: $objs)"
    }
    if {$cmd eq "connect_bd_intf_net"} {
        # the two sides of a stream must carry the same TDATA width. Vivado reports a byte-count difference as
        #   [BD 41-237] Bus Interface property TDATA_NUM_BYTES does not match between /a/M(1) and /b/S(2)
        # (the form: https://github.com/Avnet/petalinux/issues/23) and a narrower bit width as
        #   WARNING: [BD 41-2384] Width mismatch when connecting pin: '/a/x'(1) to pin: '/b/y'(4) - Only lower order
        #   bits will be connected. (https://github.com/Avnet/petalinux/issues/21)
        # a warning there; the stand-in stops on both: a stream whose sides disagree carries wrong data.
        lassign $objs a b
        set wa [intf_width $a]
        set wb [intf_width $b]
        if {$wa ne "" && $wb ne "" && $wa != $wb} {
            set ba [expr {($wa + 7) / 8}]
            set bb [expr {($wb + 7) / 8}]
            if {$ba != $bb} {
                fail "ERROR: \[BD 41-237\] Bus Interface property TDATA_NUM_BYTES does not match between /$a\($ba\) and /$b\($bb\)"
            }
            fail "ERROR: \[BD 41-2384\] Width mismatch when connecting pin: '/${a}_TDATA'($wa) to pin: '/${b}_TDATA'($wb) - a stream's two sides must carry the same TDATA width"
        }
    }
    return $objs
}

# Every HDL source of the project through a real parser, Verilator (--lint-only), once the block design is complete
# (validate_bd_design): a top that instantiates each module-reference cell's module (as the block design's wrapper
# does) so that its files are parsed and elaborated in the project's compile order (packages first). A syntax error
# stops the stand-in as it stops Vivado's synthesis, in Vivado's words:
#   ERROR: [Synth 8-2716] syntax error near ':' [/root/.../pcileech_tlps128_bar_controller.sv:472]
#   ERROR: [Synth 8-12188] Failed to read verilog '/root/.../pcileech_tlps128_bar_controller.sv'
#     (https://github.com/VoltCyclone/PCILeechFWGenerator/issues/301)
# Verilator's elaboration errors (constant functions it cannot evaluate, ...) are its own limits, not Vivado's: noted
# in the log, not failed on.
proc standin::lint_sources {} {
    variable files
    variable cellrefs
    variable linted
    set hdl [lsearch -all -inline -regexp $files {\.(v|sv)$}]
    if {$linted || [llength $hdl] == 0 || [dict size $cellrefs] == 0} { return }
    set linted 1
    set exe [expr {[info exists ::env(STANDIN_VERILATOR)] ? $::env(STANDIN_VERILATOR) : [auto_execok verilator]}]
    if {$exe eq ""} { fail "Verilator not found (set STANDIN_VERILATOR): the stand-in parses every HDL source with it" }
    set pkgs [list]
    set rest [list]
    foreach f $hdl {
        set h [open $f r]
        set text [read $h]
        close $h
        if {[regexp -line {^\s*package\s} $text]} { lappend pkgs $f } else { lappend rest $f }
    }
    set top [file join $standin::project_dir standin_lint_top.sv]
    set body "// $standin::marker\nmodule standin_lint_top;\n"
    set k 0
    foreach m [lsort -unique [dict values $cellrefs]] { append body "  $m u[incr k] ();\n" }
    write $top "$body\nendmodule"
    catch {exec {*}$exe --lint-only -Wno-fatal -Wno-lint -Wno-style --top-module standin_lint_top {*}$pkgs {*}$rest $top 2>@1} out
    set failed [list]
    foreach line [split $out "\n"] {
        if {[regexp {^%Error: ([^:]+):(\d+):\d+: syntax error, unexpected ([^,]+)} $line -> f ln tok]} {
            note_raw "ERROR: \[Synth 8-2716\] syntax error near '$tok' \[$f:$ln\]"
            if {[lsearch -exact $failed $f] < 0} { lappend failed $f }
        } elseif {[string match %Error* $line] && ![string match {*Exiting due to*} $line]} {
            note "Verilator (not failed on, see tests/vivado_standin/README.md): $line"
        }
    }
    if {[llength $failed]} {
        fail "ERROR: \[Synth 8-12188\] Failed to read verilog '[join $failed {', '}]' (Verilator --lint-only found the syntax errors above)"
    }
    note "Verilator parsed [llength $hdl] HDL sources of [dict size $cellrefs] module references: no syntax error"
}

# ------------------------------------------------------------------------------------------------ IP repositories
proc standin::repo_vlnvs {} {
    variable repos
    set found [list]
    foreach r $repos {
        foreach xml [concat [glob -nocomplain -directory $r component.xml] [glob -nocomplain -directory $r */component.xml] \
                         [glob -nocomplain -directory $r */*/component.xml]] {
            set f [open $xml r]
            set text [read $f]
            close $f
            if {[regexp {<spirit:vendor>([^<]*)</spirit:vendor>\s*<spirit:library>([^<]*)</spirit:library>\s*<spirit:name>([^<]*)</spirit:name>\s*<spirit:version>([^<]*)</spirit:version>} $text -> v l n ver]} {
                lappend found "$v:$l:$n:$ver"
            }
        }
    }
    return $found
}

proc standin::check_vlnv {vlnv} {
    variable catalog
    lassign [split $vlnv :] vendor library name version
    if {$vendor eq "xilinx.com" && $library eq "ip" && [lsearch -exact $catalog $name] >= 0} { return }
    if {[lsearch -exact [repo_vlnvs] $vlnv] >= 0} { return }
    fail "create_bd_cell -vlnv $vlnv: no such IP in the IP repositories ($standin::repos)"
}

proc standin::component_xml {dir vendor library name} {
    variable marker
    write $dir/component.xml "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<!-- $marker -->
<spirit:component xmlns:spirit=\"http://www.spiritconsortium.org/XMLSchema/SPIRIT/1685-2009\">
  <spirit:vendor>$vendor</spirit:vendor>
  <spirit:library>$library</spirit:library>
  <spirit:name>$name</spirit:name>
  <spirit:version>1.0</spirit:version>
</spirit:component>"
}

# ---------------------------------------------------------------------------------------------- board and part
proc standin::check_part {p} {
    variable part
    if {$p ne $part} { fail "part $p is not the Pynq-Z2's $part" }
}

proc standin::check_board_part {bp} {
    variable board_part
    variable props
    variable params
    if {$bp ne $board_part} { fail "board_part $bp is not the Pynq-Z2's $board_part" }
    set paths [concat [get_property BOARD_PART_REPO_PATHS project] [::dict_getdef $params board.repoPaths ""]]
    foreach p $paths {
        foreach xml [concat [glob -nocomplain -directory $p */*/board.xml] [glob -nocomplain -directory $p */board.xml]] {
            set f [open $xml r]
            set text [read $f]
            close $f
            if {[string match {*vendor="tul.com.tw"*} $text] && [string match {*name="pynq-z2"*} $text]} {
                note "board part $bp from $xml"
                return
            }
        }
    }
    fail "board_part $bp: no board files for it (pynq-z2/*/board.xml) in the board repository paths \{$paths\}"
}

# ----------------------------------------------------------------------------------------------- object model
proc dict_getdef {d key default} { if {[dict exists $d $key]} { return [dict get $d $key] } { return $default } }

proc standin::set_props {objs kv} {
    variable props
    foreach obj $objs {
        foreach {k v} $kv {
            set k [string tolower $k]
            if {$k eq "board_part"} { check_board_part $v }
            if {$k eq "part"} { check_part $v }
            if {$k eq "ip_repo_paths"} {
                foreach r $v {
                    if {![file isdirectory $r]} { fail "ip_repo_paths: no such directory: $r" }
                }
                set standin::repos $v
            }
            if {$k eq "top"} { set standin::top $v }
            if {$k eq "name" && [dict exists $standin::ports $obj]} { dict set standin::ports $v 1 }
            if {$k eq "name" && [dict exists $standin::cells $obj]} { dict set standin::cells $v [dict get $standin::cells $obj] }
            dict set props "$obj $k" $v
        }
    }
}

proc set_property {args} {
    set argv [lsearch -all -inline -not -exact $args -quiet]
    if {[lindex $argv 0] eq "-dict"} {
        standin::set_props [lindex $argv 2] [lindex $argv 1]
    } elseif {[lindex $argv 0] eq "-name"} {
        standin::set_props [standin::option $argv -objects] [list [standin::option $argv -name] [standin::option $argv -value]]
    } else {
        lassign $argv name value objs
        standin::set_props $objs [list $name $value]
    }
}

proc get_property {args} {
    lassign [standin::positional $args] name obj
    set key "[lindex $obj 0] [string tolower $name]"
    if {[dict exists $standin::props $key]} { return [dict get $standin::props $key] }
    switch -glob -- [string toupper $name] {
        VLNV { return [lindex $obj 0] }
        NAME { return [file tail [lindex $obj 0]] }
        CONFIG.ADDR_WIDTH { return 12 }
        CONFIG.FREQ_HZ { return 100000000 }
        default { return "" }
    }
}

proc set_param {name value} { dict set standin::params $name $value }
proc get_param {name} { return [::dict_getdef $standin::params $name ""] }
proc current_project {args} { return project }
proc current_fileset {args} { return sources_1 }
proc get_filesets {args} { return [standin::positional $args] }
proc get_runs {args} { return [standin::positional $args] }
proc version {args} { return "stand-in" }
foreach cmd {set_msg_config reset_msg_config update_ip_catalog update_compile_order save_bd_design
             regenerate_bd_layout config_ip_cache export_ip_user_files generate_target close_project close_design
             wait_on_run open_run write_checkpoint write_xdc opt_design place_design route_design report_power
             write_bd_tcl upgrade_ip reset_run} {
    proc $cmd {args} {}
}

proc get_ipdefs {args} {
    set pattern [lindex [standin::positional $args {-filter}] 0]
    set filter [standin::option $args -filter]
    if {$pattern eq "" && [regexp {NAME == (\w+)} $filter -> n]} { set pattern "xilinx.com:ip:$n:*" }
    lassign [split $pattern :] v l n ver
    if {[lsearch -exact $standin::catalog $n] < 0} { standin::fail "get_ipdefs $pattern: not in the catalog" }
    return "$v:$l:$n:1.0"
}

# ------------------------------------------------------------------------------------------------ project
proc create_project {args} {
    set pos [standin::positional $args {-part}]
    set name [lindex $pos 0]
    set dir [expr {[llength $pos] > 1 ? [lindex $pos 1] : "."}]
    set p [standin::option $args -part]
    if {$p eq ""} { standin::fail "create_project $name: no -part" }
    standin::check_part $p
    set standin::project_name $name
    set standin::project_dir [file normalize $dir]
    set standin::modules [dict create]
    set standin::files [list]
    file mkdir $standin::project_dir
    standin::write $standin::project_dir/$name.xpr "<!-- $standin::marker -->"
    standin::note "project $name in $standin::project_dir, part $p"
}

proc add_files {args} {
    foreach f [standin::positional $args {-fileset -of_objects}] { standin::add_hdl $f }
}
proc import_files {args} {
    foreach f [standin::positional $args {-fileset -of_objects}] { standin::add_hdl $f }
}
proc read_verilog {args} {
    foreach f [standin::positional $args {-library}] { standin::add_hdl $f }
}

proc get_files {args} {
    set pos [standin::positional $args {-filter -of_objects -of}]
    if {[llength $pos] == 0} { return $standin::files }
    set out [list]
    foreach pat $pos {
        foreach f [concat $standin::files $standin::bdfiles] {
            if {$f eq [file normalize $pat] || [string match *$pat $f]} { lappend out $f }
        }
    }
    if {$out eq ""} { standin::fail "get_files $pos: no such file in project $standin::project_name" }
    return $out
}

proc create_bd_design {name} {
    set standin::bd $name
    set bdfile $standin::project_dir/$standin::project_name.srcs/sources_1/bd/$name/$name.bd
    standin::write $bdfile "// $standin::marker"
    lappend standin::bdfiles $bdfile
    set standin::cells [dict create]
    set standin::ports [dict create]
    set standin::cellrefs [dict create]
    set standin::hierpins [dict create]
    set standin::linted 0
}
proc current_bd_design {args} { return $standin::bd }
proc validate_bd_design {args} { standin::lint_sources }

proc create_bd_cell {args} {
    set type [standin::option $args -type]
    set name [lindex [standin::positional $args {-type -vlnv -reference}] 0]
    set ref [standin::option $args -reference]
    if {$ref ne ""} {
        standin::check_module_reference $ref  ;# -type module, and -type hier -reference as FINN writes it
    } elseif {$type eq "ip"} {
        standin::check_vlnv [standin::option $args -vlnv]
    } elseif {$type ne "hier"} {
        standin::fail "create_bd_cell -type $type: unknown type"
    }
    set name [string trimleft $name /]
    if {[string first / $name] > 0} { standin::bd_objects [list $name] }  ;# inside a cell that exists
    dict set standin::cells $name $type
    if {$ref ne ""} { dict set standin::cellrefs $name $ref }
    if {$type eq "hier" && $ref eq ""} { dict set standin::hierpins $name [dict create pins {} intfs {}] }
    return $name
}

proc standin::add_hier_pin {kind pin} {
    set pin [lindex [standin::bd_objects [list $pin]] 0]
    set cell [join [lrange [split $pin /] 0 end-1] /]
    if {[dict exists $standin::hierpins $cell]} {
        dict with standin::hierpins $cell { lappend $kind [lindex [split $pin /] end] }
    }
    return $pin
}
proc create_bd_pin {args} { standin::add_hier_pin pins [lindex [standin::positional $args {-dir -type -from -to}] 0] }
proc create_bd_intf_pin {args} { standin::add_hier_pin intfs [lindex [standin::positional $args {-mode -vlnv}] 0] }

proc create_bd_port {args} {
    set name [lindex [standin::positional $args {-dir -type -from -to -freq_hz}] 0]
    dict set standin::ports $name 1
    return $name
}
proc create_bd_intf_port {args} {
    set name [lindex [standin::positional $args {-mode -vlnv}] 0]
    dict set standin::ports $name 1
    return $name
}

# "cell/pin", "/cell/pin" or "port": the cell or port must exist
proc standin::bd_objects {argv} {
    set out [list]
    foreach o [standin::positional $argv {-of_objects -of -filter -boundary_type -regexp}] {
        set o [string trimleft $o /]
        set head [lindex [split $o /] 0]
        if {[string first * $head] < 0 && ![dict exists $standin::cells $head] && ![dict exists $standin::ports $head]} {
            standin::fail "block design $standin::bd has no cell or port '$head' (asked for $o)"
        }
        lappend out $o
    }
    return $out
}
foreach cmd {get_bd_cells get_bd_ports get_bd_intf_ports get_bd_nets get_bd_intf_nets get_bd_addr_segs} {
    proc $cmd {args} { return [standin::bd_objects $args] }
}
proc get_bd_pins {args} { return [standin::bd_pins get_bd_pins pins $args] }
proc get_bd_intf_pins {args} { return [standin::bd_pins get_bd_intf_pins intfs $args] }
proc connect_bd_net {args} { standin::connect connect_bd_net $args }
proc connect_bd_intf_net {args} { standin::connect connect_bd_intf_net $args }
proc make_bd_pins_external {args} {
    foreach o [standin::bd_objects $args] { dict set standin::ports "[file tail $o]_0" 1 }
}
proc make_bd_intf_pins_external {args} {
    foreach o [standin::bd_objects $args] { dict set standin::ports "[file tail $o]_0" 1 }
}
proc apply_bd_automation {args} {}
proc assign_bd_address {args} {}
proc delete_bd_objs {args} {}

# the HDL wrapper FINN reads (stitched IP: .gen/sources_1/bd/<bd>/hdl/<bd>_wrapper.v), and the hardware handoff
# beside the .bd file, where FINN's own Tcl adds it from (its Python also looks under .gen: undecided here)
proc make_wrapper {args} {
    set bdfile [standin::option $args -files]
    if {[lsearch -exact $standin::bdfiles $bdfile] < 0} { standin::fail "make_wrapper -files $bdfile: not a block design" }
    set bd [file rootname [file tail $bdfile]]
    set dir [file dirname $bdfile]
    standin::write $dir/hdl/${bd}_wrapper.v "// $standin::marker\nmodule ${bd}_wrapper();\nendmodule"
    standin::write $dir/hw_handoff/$bd.hwh "<?xml version=\"1.0\"?>\n<!-- $standin::marker -->\n<EDKSYSTEM/>"
}

proc launch_runs {args} {
    set run [lindex [standin::positional $args {-jobs -to_step}] 0]
    set dir $standin::project_dir/$standin::project_name.runs/$run
    file mkdir $dir
    if {[standin::option $args -to_step] eq "write_bitstream"} {
        set top [expr {$standin::top ne "" ? $standin::top : "${standin::bd}_wrapper"}]
        standin::write $dir/$top.bit $standin::marker
        # the reports an implementation run writes, as real Vivado wrote them (fixtures citing their sources):
        # timing met, or with STANDIN_TIMING=failed a design that misses it
        set timing [expr {[info exists ::env(STANDIN_TIMING)] ? $::env(STANDIN_TIMING) : "met"}]
        standin::write $dir/${top}_timing_summary_routed.rpt "$standin::marker\n[standin::fixture timing_summary_$timing.rpt]"
        standin::write $dir/${top}_utilization_placed.rpt "$standin::marker\n[standin::fixture utilization_routed.rpt]"
        standin::note "$run: wrote the stand-in's $dir/$top.bit (not a bitstream)"
    }
}

proc report_utilization {args} {
    set file [standin::option $args -file]
    if {$file eq ""} { return }
    if {[standin::option $args -format] eq "xml"} {
        set cells ""
        foreach h {Instance Module "Total LUTs" "Logic LUTs" LUTRAMs SRLs FFs RAMB36 RAMB18 "DSP Blocks"} {
            append cells "<tablecell contents=\"$h\"/>"
        }
        set row "<tablecell contents=\"(top)\"/><tablecell contents=\"top\"/>[string repeat {<tablecell contents="0"/>} 8]"
        standin::write $file "<?xml version=\"1.0\"?>\n<!-- $standin::marker -->\n<RptDoc><section><table><tablerow>$cells</tablerow><tablerow>$row</tablerow></table></section></RptDoc>"
    } else {
        standin::write $file "$standin::marker\nno utilisation: nothing was synthesised"
    }
}
proc report_timing_summary {args} {
    set file [standin::option $args -file]
    if {$file ne ""} { standin::write $file "$standin::marker\nno timing" }
}

# ------------------------------------------------------------------------------------------------ IP packaging
namespace eval ipx {}
proc ipx::package_project {args} {
    set root [standin::option $args -root_dir]
    set ::standin::ipx_root $root
    standin::component_xml $root [standin::option $args -vendor] [standin::option $args -library] \
        [standin::option $args -module]
    return core
}
proc ipx::save_core {args} {
    # package_project wrote component.xml already; saving keeps it
    if {![file exists $::standin::ipx_root/component.xml]} { standin::fail "ipx::save_core: nothing packaged" }
}
proc ipx::current_core {args} { return core }
proc ipx::find_open_core {args} { return core }
foreach cmd {add_file_group add_file get_file_groups get_files remove_file remove_all_file remove_file_group
             add_address_block add_memory_map get_bus_interfaces get_bus_parameters update_checksums
             create_xgui_files remove_segment get_address_spaces add_bus_parameter add_bus_interface
             infer_bus_interface infer_bus_interfaces associate_bus_interfaces add_port_map get_ports} {
    proc ipx::$cmd {args} { return [lindex [standin::positional $args] 0] }
}

# ---------------------------------------------------------------------------------------------------- Vitis HLS
proc standin::check_includes {cpp dirs} {
    set f [open $cpp r]
    set text [read $f]
    close $f
    foreach {_ inc} [regexp -all -inline -line {^\s*#include\s+"([^"]+)"} $text] {
        set found 0
        foreach d [concat [list [file dirname $cpp]] $dirs] {
            if {[file exists $d/$inc]} { set found 1; break }
        }
        if {!$found} { fail "$cpp: #include \"$inc\" not found in [file dirname $cpp] nor in -I $dirs" }
    }
}

namespace eval standin::hls {
    proc open_project {args} {
        set name [lindex [standin::positional $args] 0]
        set ::standin::hls_project [file normalize $name]
        file mkdir $::standin::hls_project
    }
    proc add_files {args} {
        set cflags [standin::option $args -cflags]
        set dirs [list]
        # a missing -I folder is no error for the compiler (FINN always passes attention-hlslib's); a missing header is
        foreach {_ d} [regexp -all -inline {\-I\s*(\S+)} $cflags] { lappend dirs $d }
        foreach f [standin::positional $args {-cflags -csimflags}] {
            standin::need_file $f "add_files"
            standin::check_includes $f $dirs
        }
    }
    proc set_top {name} { set ::standin::hls_top $name }
    proc open_solution {args} { set ::standin::hls_solution [lindex [standin::positional $args {-flow_target}] 0] }
    proc set_part {args} { standin::check_part [lindex [standin::positional $args] 0] }
    proc create_clock {args} {}
    proc csynth_design {args} {
        if {$::standin::hls_top eq ""} { standin::fail "csynth_design: no set_top" }
    }
    proc export_design {args} {
        set sol $::standin::hls_project/$::standin::hls_solution
        set top $::standin::hls_top
        standin::component_xml $sol/impl/ip xilinx.com hls $top
        standin::write $sol/impl/ip/hdl/verilog/$top.v "// $::standin::marker\nmodule ${top}();\nendmodule"
        standin::write $sol/impl/verilog/$top.v "// $::standin::marker\nmodule ${top}();\nendmodule"
        standin::note "exported $top as the stand-in's IP (not synthesised) in $sol/impl/ip"
    }
    proc close_project {args} {}
}

# `vivado -version`: a real banner (fixtures/banner_<version>.txt, each citing where it was printed) for the version
# STANDIN_VIVADO_VERSION names (2024.2 if unset); a version without a fixture prints the form its release prints
# (capitalised up to 2022.2, lower case on Linux from 2023.1), so that a test can play an unsupported one.
proc standin::banner {} {
    set v [expr {[info exists ::env(STANDIN_VIVADO_VERSION)] ? $::env(STANDIN_VIVADO_VERSION) : "2024.2"}]
    set fixture [file join $standin::here fixtures banner_$v.txt]
    if {[file exists $fixture]} {
        set f [open $fixture r]
        foreach line [split [string trimright [read $f]] "\n"] {
            if {[string index $line 0] ne "#"} { puts $line }
        }
        close $f
    } elseif {[package vcompare $v 2023.1] >= 0} {
        puts "vivado v$v (64-bit)"
    } else {
        puts "Vivado v$v (64-bit)"
    }
    puts stderr "(lpyolo-flow test stand-in playing Vivado $v, not a Xilinx tool)"
}

proc standin::run {tool argv} {
    set standin::tool $tool
    if {$tool in {vitis_hls vitis-run}} {
        foreach cmd [info commands ::standin::hls::*] {
            catch {rename ::[namespace tail $cmd] ""}
            rename $cmd ::[namespace tail $cmd]
        }
        foreach cmd {config_compile config_interface config_rtl config_export config_dataflow config_array_partition} {
            proc ::$cmd {args} {}
        }
        if {$tool eq "vitis-run"} {
            # finn/util/hls.py: `vitis-run --mode hls --tcl SCRIPT`
            if {[option $argv --mode] ne "hls"} { puts stderr "stand-in vitis-run: only --mode hls is played ($argv)"; exit 2 }
            set script [option $argv --tcl]
        } else {
            set script [lindex [positional $argv {-f -l}] 0]
            if {[option $argv -f] ne ""} { set script [option $argv -f] }
        }
    } else {
        set script [option $argv -source]
    }
    proc ::unknown {cmd args} {
        if {[string match set_directive_* $cmd]} { return }
        standin::fail "unknown command '$cmd': the stand-in does not know it (add it to tests/vivado_standin/standin.tcl)"
    }
    if {$tool eq "vivado" && [lsearch -exact $argv -version] >= 0} {
        banner
        exit 0
    }
    if {$script eq ""} { puts stderr "stand-in $tool: no script given ($argv)"; exit 2 }
    if {![file exists $script]} { puts stderr "ERROR: stand-in $tool: script $script not found"; exit 1 }
    note "$tool stand-in running [file normalize $script]"
    if {[catch {uplevel #0 [list source $script]} err]} {
        puts stderr "ERROR: $err"
        puts stderr $::errorInfo
        set log [open $tool.log a]
        puts $log "ERROR: $err\n$::errorInfo"
        close $log
        exit 1
    }
    exit 0
}
