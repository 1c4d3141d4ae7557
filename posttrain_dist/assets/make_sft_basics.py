"""Writes the built-in data sets written for this project:

- `builtin:sft-basics`: short, direct answers to a few hundred questions (SFT);
- `builtin:prefs-basics`: preference pairs on questions with one right answer, the right answer
  chosen and a plausible wrong one rejected (DPO).

    python posttrain_dist/assets/make_sft_basics.py

Deterministic: the same files every time. About 10 % of the rows, chosen by a seeded shuffle,
go to the held-out file that training never sees.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

FACTS = [
    ("What does a thermometer measure?", "A thermometer measures temperature."),
    ("What gas do plants take in from the air to make food?", "Plants take in carbon dioxide and use sunlight to turn it into sugar."),
    ("What is the boiling point of water at sea level in Celsius?", "Water boils at 100 degrees Celsius at sea level."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("How many hours are in a day?", "A day has 24 hours."),
    ("How many minutes are in an hour?", "An hour has 60 minutes."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet because of the iron oxide on its surface."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("What is the chemical symbol for sodium?", "The chemical symbol for sodium is Na."),
    ("What is H2O?", "H2O is the chemical formula for water: two hydrogen atoms and one oxygen atom."),
    ("What organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth."),
    ("What is the tallest mountain above sea level?", "Mount Everest is the tallest mountain above sea level, at about 8,849 meters."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("What language has the most native speakers?", "Mandarin Chinese has the most native speakers."),
    ("What is photosynthesis?", "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar and release oxygen."),
    ("What is gravity?", "Gravity is the force that pulls objects with mass toward each other."),
    ("What is an atom?", "An atom is the smallest unit of a chemical element, made of a nucleus and electrons."),
    ("What is a prime number?", "A prime number is a whole number greater than 1 whose only divisors are 1 and itself."),
    ("Is 7 a prime number?", "Yes, 7 is a prime number."),
    ("Is 9 a prime number?", "No, 9 is not prime: it equals 3 times 3."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("What is the square root of 144?", "The square root of 144 is 12."),
    ("What is a noun?", "A noun is a word that names a person, place, thing or idea."),
    ("What is a verb?", "A verb is a word that describes an action or a state, like 'run' or 'be'."),
    ("What is an adjective?", "An adjective is a word that describes a noun, like 'blue' or 'tall'."),
    ("What is the main ingredient of bread?", "The main ingredient of bread is flour."),
    ("What do you call a baby cat?", "A baby cat is called a kitten."),
    ("What do you call a baby dog?", "A baby dog is called a puppy."),
    ("What do you call a group of wolves?", "A group of wolves is called a pack."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
    ("What is the largest mammal?", "The blue whale is the largest mammal."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("How many legs does an insect have?", "An insect has six legs."),
    ("What is the hardest natural material?", "Diamond is the hardest natural material."),
    ("What is the opposite of north?", "The opposite of north is south."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
    ("What color do you get by mixing red and white?", "Mixing red and white gives pink."),
    ("What is the primary function of the lungs?", "The lungs take in oxygen and remove carbon dioxide from the blood."),
    ("What is a CPU?", "A CPU is the central processing unit, the part of a computer that runs program instructions."),
    ("What does RAM stand for?", "RAM stands for random-access memory."),
    ("What does HTML stand for?", "HTML stands for HyperText Markup Language."),
    ("What is an operating system?", "An operating system is the software that manages a computer's hardware and runs its programs."),
    ("What is a password manager?", "A password manager is a program that stores your passwords securely and fills them in for you."),
    ("What is the internet?", "The internet is a global network of computers that exchange data."),
    ("What is a byte?", "A byte is a unit of digital data made of eight bits."),
    ("How many bits are in a byte?", "A byte has eight bits."),
    ("What is Python?", "Python is a popular programming language known for its readable syntax."),
    ("What does a compiler do?", "A compiler translates source code into a program the computer can run."),
    ("What is a function in programming?", "A function is a named block of code that takes inputs and returns a result."),
    ("What is a loop in programming?", "A loop repeats a block of code while a condition holds or for each item in a collection."),
    ("What is a bug in software?", "A bug is a mistake in a program that makes it behave wrongly."),
    ("What is machine learning?", "Machine learning is a way of building programs that learn patterns from data instead of following hand-written rules."),
    ("What is a language model?", "A language model is a program that predicts the next word of a text, and so can write text."),
    ("What is the speed of light?", "Light travels at about 300,000 kilometers per second in a vacuum."),
    ("What causes the seasons on Earth?", "The seasons come from the tilt of Earth's axis as it orbits the Sun."),
    ("Why is the sky blue?", "The sky looks blue because air scatters blue sunlight more than red light."),
    ("What is the Moon?", "The Moon is Earth's only natural satellite."),
    ("How long does Earth take to orbit the Sun?", "Earth takes about 365.25 days to orbit the Sun."),
    ("What is a volcano?", "A volcano is an opening in Earth's crust where molten rock, ash and gas escape."),
    ("What is an earthquake?", "An earthquake is a sudden shaking of the ground caused by moving rock beneath the surface."),
    ("What is a desert?", "A desert is a region that gets very little rain."),
    ("What is a continent?", "A continent is one of Earth's large land masses, such as Africa or Asia."),
    ("How many continents are there?", "There are seven continents."),
    ("What is democracy?", "Democracy is a system of government in which citizens choose their leaders by voting."),
    ("What is a budget?", "A budget is a plan for how to spend and save money."),
    ("What is inflation?", "Inflation is a general rise in prices, which lowers what money can buy."),
    ("What is a recipe?", "A recipe is a list of ingredients and steps for preparing a dish."),
    ("How do you boil an egg?", "Place the egg in boiling water for about 9 minutes, then cool it in cold water."),
    ("How can I fall asleep faster?", "Keep a regular bedtime, avoid screens and caffeine late, and keep your room dark and cool."),
    ("How do I make a cup of tea?", "Pour hot water over a tea bag, steep for three to five minutes, then remove the bag."),
    ("Give me a tip for studying.", "Study in short focused sessions and test yourself on the material instead of rereading it."),
    ("How can I save money on groceries?", "Plan meals, shop with a list, and buy store brands and seasonal produce."),
    ("How often should I water a cactus?", "Water a cactus every two to four weeks, letting the soil dry out between waterings."),
    ("What should I do if I burn my finger?", "Cool the burn under running water for about 20 minutes and cover it with a clean dressing."),
    ("How do I write a good email subject line?", "Keep it short and specific, saying what the email is about and any action needed."),
    ("How can I improve my handwriting?", "Write slowly, hold the pen loosely, and practice the letters you find hardest."),
    ("Suggest a name for a pet goldfish.", "How about Bubbles?"),
    ("Suggest a healthy snack.", "An apple with a handful of nuts is a healthy snack."),
    ("Tell me a fun fact.", "Octopuses have three hearts."),
    ("Say hello.", "Hello! How can I help you today?"),
    ("Thank you!", "You're welcome!"),
    ("Good morning!", "Good morning! What can I do for you?"),
    ("Can you keep your answers short?", "Yes, I will keep my answers short."),
    ("Summarize the water cycle in one sentence.", "Water evaporates, condenses into clouds, falls as precipitation and collects again in rivers and seas."),
    ("Summarize what a library is in one sentence.", "A library is a place that lends books and other media for free."),
    ("Write a haiku about rain.", "Soft rain on the roof\nthe garden drinks in silence\npuddles hold the sky"),
    ("Write one sentence about autumn.", "In autumn the leaves turn gold and red and drift down in the cool wind."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("Translate 'good night' into French.", "'Good night' in French is 'bonne nuit'."),
    ("Translate 'hello' into German.", "'Hello' in German is 'hallo'."),
    ("Translate 'cat' into Italian.", "'Cat' in Italian is 'gatto'."),
    ("What is the past tense of 'run'?", "The past tense of 'run' is 'ran'."),
    ("What is the past tense of 'eat'?", "The past tense of 'eat' is 'ate'."),
    ("What is the past tense of 'go'?", "The past tense of 'go' is 'went'."),
    ("What is a synonym for 'happy'?", "A synonym for 'happy' is 'joyful'."),
    ("What is a synonym for 'big'?", "A synonym for 'big' is 'large'."),
    ("What is a synonym for 'fast'?", "A synonym for 'fast' is 'quick'."),
]

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("Brazil", "Brasília"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Russia", "Moscow"), ("Poland", "Warsaw"), ("Sweden", "Stockholm"),
    ("Norway", "Oslo"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Greece", "Athens"), ("Turkey", "Ankara"),
    ("Ireland", "Dublin"), ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Austria", "Vienna"),
    ("Switzerland", "Bern"), ("South Korea", "Seoul"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("Indonesia", "Jakarta"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Colombia", "Bogotá"),
    ("New Zealand", "Wellington"), ("Morocco", "Rabat"), ("Ghana", "Accra"), ("Hungary", "Budapest"),
]

OPPOSITES = [
    ("hot", "cold"), ("up", "down"), ("light", "dark"), ("early", "late"), ("happy", "sad"), ("open", "closed"),
    ("full", "empty"), ("strong", "weak"), ("rich", "poor"), ("young", "old"), ("wet", "dry"), ("loud", "quiet"),
    ("hard", "soft"), ("win", "lose"), ("begin", "end"), ("push", "pull"), ("high", "low"), ("thick", "thin"),
    ("inside", "outside"), ("true", "false"),
]

PLURALS = [
    ("mouse", "mice"), ("child", "children"), ("tooth", "teeth"), ("foot", "feet"), ("person", "people"),
    ("box", "boxes"), ("city", "cities"), ("knife", "knives"), ("leaf", "leaves"), ("sheep", "sheep"),
    ("goose", "geese"), ("woman", "women"), ("cactus", "cacti"), ("bus", "buses"), ("baby", "babies"),
]

WORDS = ["apple", "garden", "window", "planet", "river", "candle", "bridge", "pencil", "rocket", "forest",
         "orange", "silver", "market", "winter", "camera", "ladder", "puzzle", "island", "jacket", "violin"]


def pairs(rng: random.Random) -> list[tuple[str, str]]:
    out = list(FACTS)
    out += [(f"What is the capital of {c}?", f"The capital of {c} is {k}.") for c, k in CAPITALS]
    out += [(f"What is the opposite of '{a}'?", f"The opposite of '{a}' is '{b}'.") for a, b in OPPOSITES]
    out += [(f"What is the plural of '{a}'?", f"The plural of '{a}' is '{b}'.") for a, b in PLURALS]
    for w in WORDS:
        out.append((f"Spell '{w}' backwards.", f"'{w}' backwards is '{w[::-1]}'."))
        out.append((f"How many letters are in the word '{w}'?", f"The word '{w}' has {len(w)} letters."))
    for _ in range(30):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice("+-*")
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        shown = {"+": "+", "-": "-", "*": "×"}[op]
        out.append((f"What is {a} {shown} {b}?", f"{a} {shown} {b} = {value}."))
    for _ in range(15):
        m = rng.randint(2, 20)
        out.append((f"How many centimeters are in {m} meters?", f"{m} meters is {m * 100} centimeters."))
        h = rng.randint(2, 12)
        out.append((f"How many minutes are in {h} hours?", f"{h} hours is {h * 60} minutes."))
    return out


def preference_pairs(rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, right answer, wrong answer): the wrong one reads just as confidently."""
    out = []
    for i, (country, capital) in enumerate(CAPITALS):
        wrong = CAPITALS[(i + rng.randint(1, len(CAPITALS) - 1)) % len(CAPITALS)][1]
        out.append((f"What is the capital of {country}?", f"The capital of {country} is {capital}.",
                    f"The capital of {country} is {wrong}."))
    for a, b in OPPOSITES:
        wrong = rng.choice([w for pair in OPPOSITES for w in pair if w not in (a, b)])
        out.append((f"What is the opposite of '{a}'?", f"The opposite of '{a}' is '{b}'.", f"The opposite of '{a}' is '{wrong}'."))
    for a, b in PLURALS:
        naive = a + "s" if a + "s" != b else a + "es"
        out.append((f"What is the plural of '{a}'?", f"The plural of '{a}' is '{b}'.", f"The plural of '{a}' is '{naive}'."))
    for _ in range(40):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        wrong = a + b + rng.choice([-10, -2, -1, 1, 2, 10])
        out.append((f"What is {a} + {b}?", f"{a} + {b} = {a + b}.", f"{a} + {b} = {wrong}."))
    return out


def write(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"{name}: {len(rows)} rows")


def main() -> None:
    rng = random.Random(1234)
    data = sorted(set(pairs(rng)))
    rng.shuffle(data)
    held = len(data) // 10
    for name, part in (("sft_basics_heldout.jsonl", data[:held]), ("sft_basics_train.jsonl", data[held:])):
        write(name, [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in part])

    prefs = preference_pairs(random.Random(99))
    random.Random(5).shuffle(prefs)
    held = len(prefs) // 10
    for name, part in (("prefs_basics_heldout.jsonl", prefs[:held]), ("prefs_basics_train.jsonl", prefs[held:])):
        write(name, [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": c}],
                      "rejected": [{"role": "assistant", "content": r}]} for q, c, r in part])


if __name__ == "__main__":
    main()
