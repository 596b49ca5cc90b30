//! The demo's clubs and the players who score for them: data only, which
//! the fixtures draw from.

/// The clubs, each with the forwards and midfielders who score its goals.
/// Names in the style of each club's squad, not a real line-up.
pub const CLUBS: &[(&str, [&str; 5])] = &[
    (
        "Arsenal",
        [
            "Tom Whitley",
            "Jamie Okafor",
            "Luca Brennan",
            "Sam Ashworth",
            "Kieran Doyle",
        ],
    ),
    (
        "Aston Villa",
        [
            "Harry Pell",
            "Marcus Adeyemi",
            "Callum Ross",
            "Joe Hartigan",
            "Ben Lowry",
        ],
    ),
    (
        "Barcelona",
        [
            "Pau Ferrer",
            "Marc Vidal",
            "Jordi Soler",
            "Àlex Puig",
            "Iker Roca",
        ],
    ),
    (
        "Bayern",
        [
            "Jonas Weber",
            "Felix Brandt",
            "Leon Hofmann",
            "Max Keller",
            "Tim Schuster",
        ],
    ),
    (
        "Benfica",
        [
            "Rui Matos",
            "Diogo Correia",
            "André Pires",
            "Tiago Nunes",
            "João Serra",
        ],
    ),
    (
        "Celtic",
        [
            "Callum McBride",
            "Rory Quinn",
            "Aidan Doherty",
            "Lewis Grant",
            "Shane Connolly",
        ],
    ),
    (
        "Chelsea",
        [
            "Reece Hollins",
            "Mason Clarke",
            "Noah Pearce",
            "Cole Madden",
            "Theo Barker",
        ],
    ),
    (
        "Dortmund",
        [
            "Niklas Krüger",
            "Jannik Vogt",
            "Paul Zimmer",
            "Lukas Engel",
            "Erik Sauer",
        ],
    ),
    (
        "Inter",
        [
            "Lorenzo Bassi",
            "Matteo Greco",
            "Davide Conti",
            "Simone Ferri",
            "Andrea Villa",
        ],
    ),
    (
        "Juventus",
        [
            "Federico Rossi",
            "Nicolò Gallo",
            "Marco Fontana",
            "Giorgio Moretti",
            "Luca Bianchi",
        ],
    ),
    (
        "Liverpool",
        [
            "Danny Mercer",
            "Curtis Hale",
            "Owen Fletcher",
            "Jordan Price",
            "Ryan Doran",
        ],
    ),
    (
        "Lyon",
        [
            "Hugo Lambert",
            "Théo Garnier",
            "Lucas Morel",
            "Nathan Roux",
            "Maxime Faure",
        ],
    ),
    (
        "Man City",
        [
            "Jack Ramsden",
            "Phil Oduya",
            "Liam Foden",
            "Kevin Drury",
            "Rico Lewin",
        ],
    ),
    (
        "Milan",
        [
            "Alessandro Costa",
            "Riccardo Lombardi",
            "Sandro Tonelli",
            "Rafa Leone",
            "Olivier Gerardi",
        ],
    ),
    (
        "Napoli",
        [
            "Ciro Esposito",
            "Gennaro Russo",
            "Salvatore Amato",
            "Vincenzo Di Lauro",
            "Pasquale Ruggiero",
        ],
    ),
    (
        "Porto",
        [
            "Fábio Teixeira",
            "Pepê Carvalho",
            "Danny Loureiro",
            "Gonçalo Borges",
            "Otávio Sequeira",
        ],
    ),
    (
        "PSG",
        [
            "Kylian Mbaye",
            "Ousmane Diallo",
            "Warren Zaïre",
            "Bradley Barcola",
            "Randal Koné",
        ],
    ),
    (
        "Real Madrid",
        [
            "Rodrigo Varela",
            "Jude Bellamy",
            "Vinícius Sena",
            "Fede Valdés",
            "Brahim Díaz",
        ],
    ),
    (
        "Roma",
        [
            "Paulo Dybala",
            "Lorenzo Pellini",
            "Stephan El Amrani",
            "Tommaso Baldi",
            "Nicola Zalla",
        ],
    ),
    (
        "Sevilla",
        [
            "Jesús Navarro",
            "Lucas Ocampos",
            "Isaac Romero",
            "Suso Ramos",
            "Óliver Torres",
        ],
    ),
    (
        "Sporting",
        [
            "Viktor Gyökeres",
            "Pedro Gonçalves",
            "Francisco Trincão",
            "Marcus Edwards",
            "Hidemasa Morita",
        ],
    ),
    (
        "Tottenham",
        [
            "Son Min-jae",
            "Dejan Kulevski",
            "James Maddox",
            "Richarlison Alves",
            "Brennan Johnston",
        ],
    ),
    (
        "Valencia",
        [
            "Hugo Duro",
            "Diego López",
            "Javi Guerra",
            "André Almeida",
            "Pepelu García",
        ],
    ),
    (
        "Ajax",
        [
            "Brian Brobbey",
            "Steven Bergwijn",
            "Kenneth Taylor",
            "Mika Godts",
            "Chuba Akpom",
        ],
    ),
];
/// The scorers of `club`, if it is one of the demo's.
pub fn squad(club: &str) -> Option<&'static [&'static str; 5]> {
    CLUBS
        .iter()
        .find(|(name, _)| *name == club)
        .map(|(_, squad)| squad)
}

/// How many clubs the demo has: at most half as many matches at once.
pub const CLUB_COUNT: usize = CLUBS.len();
