"""Rebuild the two demo PDFs: `python tests/make_corpus.py` (the text below is their source)."""

from pathlib import Path

from pdfgen import write_pdf

HERE = Path(__file__).resolve().parents[1] / "corpora"

AURORA = [
    ["Aurora Observatory: A Short History",
     "The Aurora Observatory stands on the northern ridge of Mount Halden, 2,140 metres above "
     "sea level. It was completed in 1987 after eleven years of planning and four years of "
     "construction, and it was opened to visiting scientists in the spring of 1988.",
     "The site was chosen by the astronomer Dr. Ines Varga, who measured the seeing on six "
     "mountains between 1974 and 1976. Mount Halden had the steadiest air and, on average, 212 "
     "clear nights a year, more than any other candidate."],
    ["The Halden Eye",
     "The main instrument is a reflecting telescope with a primary mirror 2.4 metres across, "
     "known to the staff as the Halden Eye. The mirror was cast in 1983 from low-expansion glass "
     "and polished for nineteen months before it was shipped up the mountain road in a heated "
     "container.",
     "In 2009 the Halden Eye received an adaptive optics system with 349 actuators, which "
     "corrects the blurring caused by the atmosphere up to 500 times per second."],
    ["Discoveries",
     "The observatory's best known result is the discovery of the comet C/1996 H2, found by the "
     "night assistant Tomas Rieck on 14 April 1996 during a routine calibration exposure.",
     "Between 2011 and 2019 the Aurora survey catalogued 1,318 variable stars in the "
     "constellation Cygnus. The catalogue is still used to calibrate brightness measurements."],
    ["Visiting the Observatory",
     "Public tours run on Saturdays from June to September. Each tour lasts ninety minutes and "
     "takes at most 25 visitors. Tickets cost 12 euros for adults and are free for children "
     "under twelve.",
     "The road above the village of Brenn is closed to private cars; a shuttle bus leaves the "
     "Brenn car park every hour from 10:00."],
]

GREENWAY = [
    ["Greenway Cooperative Annual Report 2025",
     "Greenway is an energy cooperative owned by the people of the Kessel valley. At the end of "
     "2025 it had 412 members, up from 356 a year earlier. Each member holds one vote at the "
     "general assembly, whatever the number of shares they own.",
     "Revenue for the year was 3.8 million euros, of which 2.9 million came from selling "
     "electricity and the rest from heat sales and grid services."],
    ["Generation",
     "The solar array on the former quarry at Brannock has a capacity of 1.2 megawatts and "
     "produced 1,310 megawatt-hours in 2025. The two wind turbines at Osterfeld produced "
     "5,870 megawatt-hours, 6 percent less than planned because of a gearbox repair in March.",
     "The district heating network now supplies 148 homes and the Kessel primary school."],
    ["Plans for 2026",
     "The assembly approved a battery storage system of 2 megawatt-hours at Brannock, to be "
     "built in 2026 at an expected cost of 640,000 euros. Members will vote in May on a third "
     "wind turbine.",
     "The dividend for 2025 is 3.5 percent of paid-in capital, paid in June 2026."],
]

if __name__ == "__main__":
    write_pdf(HERE / "aurora-observatory.pdf", AURORA, title="Aurora Observatory: A Short History")
    write_pdf(HERE / "greenway-annual-report-2025.pdf", GREENWAY,
              title="Greenway Cooperative Annual Report 2025")
