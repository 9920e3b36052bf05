"""The dictionary of the word game: the words a move may play (lower case, a to z only)."""

from __future__ import annotations

from collections import defaultdict

__all__ = ["BY_LETTER", "WORDS"]

_TEXT = """
able about above acid acorn actor adapt admit adobe adult agent agree ahead alarm album alert alien
alley allow alloy alone along alpha amber amend angel anger angle ankle anvil apple apron arena argue
arrow aside asset atlas attic audio audit avoid awake award axe axis
badge bagel baker banjo barge basil basin batch beach beard beast begin being bench berry birch
bison blade blank blend bliss block bloom board boast bonus booth brain brave bread brick bride
brook broom brush bugle build cabin cable camel canal candy canoe cargo carol cedar chain chalk
charm chart cheek chess chief chime cider cigar civic clamp cliff clock cloud coach coast cobra
comet coral couch crane crate creek crisp crown crumb curve cycle
daisy dance dealt decoy delta depot depth diary diner disco ditch diver dodge donor dough dozen
draft drama dream dress drift drill drink drive drone drum dune dusk dwarf eager eagle early earth
easel ebony eclipse edge eight elbow elder elect elite elk ember empty enemy enjoy entry envoy equal
era error essay ether event every exact exile exist extra eyelid
fable faith falcon fancy feast fence ferry fever fiber field fifty final flame flask fleet flint
float flock flood floor flour fluid flute focus forge forty forum fossil frame fresh frost fruit
fudge gable galaxy gamma garden gauge gecko genie ghost giant ginger glade glass gleam globe glove
goose gourd grain grape graph grass gravy green grill grove guard guest guide guild gulf gypsy
habit hammer handy harbor hatch haven hazel heart hedge hello heron hinge hobby honey honor horse
hotel house humor hunch husky hydra ice icicle idea idiom idle igloo image inbox index inlet input
iris iron island ivory jacket jaguar jelly jewel jiffy joint joker jolly judge juice jumbo jungle
junior karma kayak kebab kettle khaki kidney kiosk kitten knack knee knife knight knot koala
label lace ladder lagoon lamp lance laser latch lava lawn layer leaf lemon level lever lilac
linen lion llama lobby local lodge logic lotus lucky lunar lunch lyric
magic magnet major mango manor maple march marsh mason medal melon mercy merit metal meter
mimic minor mirth model molar money month moose motor mound mouse mural music myth
nacho naive nectar needle nerve never night ninja noble noise north notch novel nudge nurse nylon
oasis ocean octet offer olive omega onion onset opera orbit order organ otter ounce outer oval
owl oxide oyster
paddle palm panda panel paper parade party pasta patch pearl pedal penny pepper piano pilot pixel
pizza plank plaza plum poem polar pond poppy porch pouch prism prize proof pulse puppy
quail quake query quest quick quiet quill quilt quota quote
rabbit radar radio raft rally ranch raven razor ready realm rebel relay remedy reply rhyme ridge
rifle river roast robin robot rocket rodeo rose rover royal ruby rumor rural
saddle safari salad salmon salsa satin sauce scale scarf scout sedan seed shade shark shelf shell
shirt shore siren skate sketch skull slate sleet slope smile snake solar sonic spark spice spoon
squid stair stamp steam stone storm sugar sunny swamp sweet swift syrup
table taco talent tango tapir taste teddy tempo tenor thorn thumb tiger timber toast token topaz
torch totem tower toxic trail train tread trend tribe trout truck tulip tuna tundra turtle
twig ultra umber uncle under unify union unit unity upper urban usher utter
valley value valve vapor vault velvet venom verse vessel video vigor villa vinyl viola violet
viper visit vital vivid vocal vodka voice volt vowel voyage
wafer wagon waltz water weave wedge whale wheat wheel whisk widow width willow wind wing wise
witch wizard wolf woman wonder world worry wreath wrist
xenon xylem yacht yard yeast yellow yield yodel yogurt young youth yucca zebra zeal zenith zero
zesty zigzag zinc zodiac zone
"""

WORDS: frozenset[str] = frozenset(_TEXT.split())
"""Every playable word."""


def _by_letter() -> dict[str, tuple[str, ...]]:
    table: defaultdict[str, list[str]] = defaultdict(list)
    for word in sorted(WORDS):
        table[word[0]].append(word)
    return {letter: tuple(words) for letter, words in table.items()}


BY_LETTER: dict[str, tuple[str, ...]] = _by_letter()
"""The playable words by their first letter, sorted (what a bot chooses from)."""
